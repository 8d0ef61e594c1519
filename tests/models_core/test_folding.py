import pytest
import torch
import torch.nn as nn

from models_core.conv_transpose import ConvTranspose2d
from models_core.dcgan import DCGAN_PRESETS, Generator
from models_core.folding import fold_batchnorm, serving_copy
from models_core.vae import VAE, VAEConfig


def with_running_stats(net: nn.Module, seed: int = 0) -> nn.Module:
    """Statistics far from the identity, so that a BatchNorm left unfolded or folded wrongly shows."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 3 + 0.2)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return net.eval()


def batchnorms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@torch.no_grad()
def test_folded_generator_computes_the_same_faces_without_batchnorm():
    g = with_running_stats(Generator(DCGAN_PRESETS["tiny"]))
    folded = fold_batchnorm(g)
    z = torch.randn(5, g.latent_dim)
    assert batchnorms(g) == 3 and batchnorms(folded) == 0  # the projection's BatchNorm too
    torch.testing.assert_close(folded.decode(z), g.decode(z), atol=1e-5, rtol=1e-5)
    assert batchnorms(g) == 3  # the original is left as it was


@pytest.mark.parametrize("impl", ["native", "scratch"])
@torch.no_grad()
def test_folded_vae_encodes_and_decodes_the_same(impl):
    vae = with_running_stats(VAE(VAEConfig(latent_dim=8, hidden=4, conv_impl=impl)))
    folded = fold_batchnorm(vae)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    assert batchnorms(folded) == 0
    torch.testing.assert_close(folded.embed(x), vae.embed(x), atol=1e-5, rtol=1e-5)
    z = torch.randn(3, 8)
    torch.testing.assert_close(folded.decode(z), vae.decode(z), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 6, 3, padding=1, bias=False),
    nn.Conv2d(3, 6, 3, padding=1),
    nn.ConvTranspose2d(3, 6, 4, 2, 1, bias=False),
    ConvTranspose2d(3, 6, 4, 2, 1, bias=True),
])
@torch.no_grad()
def test_each_kind_of_convolution_folds(conv):
    net = with_running_stats(nn.Sequential(conv, nn.BatchNorm2d(6), nn.ReLU()))
    folded = fold_batchnorm(net)
    x = torch.randn(2, 3, 8, 8)
    assert isinstance(folded[1], nn.Identity)
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_batchnorm_that_does_not_follow_a_layer_it_can_fold_into_stays():
    net = with_running_stats(nn.Sequential(
        nn.BatchNorm2d(3),  # first: nothing before it
        nn.Conv2d(3, 6, 3, groups=3),  # grouped
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.BatchNorm2d(6),  # after an activation
    ))
    folded = fold_batchnorm(net)
    x = torch.randn(2, 3, 8, 8)
    assert batchnorms(folded) == 3
    torch.testing.assert_close(folded(x), net(x))


@torch.no_grad()
def test_serving_copy_stores_weights_in_the_computing_dtype_channels_last_and_frozen():
    g = with_running_stats(Generator(DCGAN_PRESETS["tiny"]))
    served = serving_copy(g, torch.bfloat16)
    convs = [m for m in served.modules() if isinstance(m, ConvTranspose2d)]
    assert {p.dtype for p in served.parameters()} == {torch.bfloat16}
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not any(p.requires_grad for p in served.parameters())
    z = torch.randn(4, g.latent_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = served.decode(z).float()
    assert (images - g.decode(z)).abs().max() < 0.05  # bf16's precision, on [-1, 1]
