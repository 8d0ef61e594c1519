import pytest
import torch
import torch.nn.functional as F

from models_core.conv_transpose import ConvTranspose2d, conv_transpose2d
from models_core.dcgan import DCGANConfig, Generator
from models_core.vae import VAE, VAEConfig

# (kernel, stride, padding): the networks' k4 s2 p1, plus odd kernels, stride 1 and 3, no
# padding, and padding beyond k-1 (where the scratch version must crop).
CASES = [(4, 2, 1), (3, 2, 1), (3, 1, 0), (5, 3, 2), (4, 2, 0), (2, 2, 0), (3, 1, 1), (1, 1, 0), (3, 2, 3)]


@pytest.mark.parametrize("k,s,p", CASES)
def test_matches_torch_forward_and_gradients(k, s, p):
    g = torch.Generator().manual_seed(k * 100 + s * 10 + p)
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)

    ours = conv_transpose2d(x, w, b, stride=s, padding=p)
    ref = F.conv_transpose2d(x, w, b, stride=s, padding=p)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref)

    upstream = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(ours, (x, w, b), upstream)
    ref_grads = torch.autograd.grad(ref, (x, w, b), upstream)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_scratch_gradcheck():
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: conv_transpose2d(x, w, None, 2, 1), (x, w))


def test_scratch_does_not_call_the_native_op(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("scratch implementation called F.conv_transpose2d")

    monkeypatch.setattr(F, "conv_transpose2d", forbidden)
    layer = ConvTranspose2d(3, 2, 4, 2, 1, impl="scratch")
    assert layer(torch.randn(1, 3, 4, 4)).shape == (1, 2, 8, 8)


def test_module_impls_share_weights_and_agree():
    torch.manual_seed(0)
    native = ConvTranspose2d(6, 5, 4, 2, 1, impl="native")
    scratch = ConvTranspose2d(6, 5, 4, 2, 1, impl="scratch")
    scratch.load_state_dict(native.state_dict())
    ref = torch.nn.ConvTranspose2d(6, 5, 4, 2, 1)
    ref.load_state_dict(native.state_dict())  # same parameter names and shapes as torch's layer
    x = torch.randn(2, 6, 7, 7)
    torch.testing.assert_close(native(x), ref(x))
    torch.testing.assert_close(scratch(x), ref(x), atol=1e-5, rtol=1e-5)


def test_unknown_impl_is_rejected():
    with pytest.raises(ValueError, match="impl"):
        ConvTranspose2d(1, 1, 3, impl="fast")


@pytest.mark.parametrize("make", [
    lambda impl: VAE(VAEConfig(latent_dim=8, hidden=4, conv_impl=impl)),
    lambda impl: Generator(DCGANConfig(latent_dim=8, hidden=(4, 8, 16), conv_impl=impl)),
])
def test_networks_give_the_same_output_with_either_impl(make):
    torch.manual_seed(0)
    native, scratch = make("native").eval(), make("scratch").eval()
    scratch.load_state_dict(native.state_dict())
    z = torch.randn(3, 8)
    torch.testing.assert_close(scratch.decode(z), native.decode(z), atol=1e-5, rtol=1e-4)
