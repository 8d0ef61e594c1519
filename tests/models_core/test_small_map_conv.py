"""The GEMM weight gradient into and out of small maps: the library's gradients, in both precisions."""

import pytest
import torch
import torch.nn.functional as F

from models_core.conv_transpose import ConvTranspose2d
from models_core.small_map_conv import SMALL_MAP_POSITIONS, SmallMapConv2d, takes_gemm
from models_core.vae import VAE, VAEConfig


def backprop(forward, module, x, autocast: bool) -> dict:
    """Output, input gradient and parameter gradients of a weighted sum of forward(x)."""
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        y = forward(x)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    out = {"y": y.detach(), "x": x.grad, **{n: p.grad.clone() for n, p in module.named_parameters()}}
    module.zero_grad()
    return out


def gemm_path(module, x) -> bool:
    transposed = isinstance(module, ConvTranspose2d)
    stride, padding = (module.stride, module.padding) if transposed else (module.stride[0], module.padding[0])
    return takes_gemm(x, module.weight, stride, padding, transposed)


def library(module):
    """The same layer through the library's own conv and its own backward."""
    conv = F.conv_transpose2d if isinstance(module, ConvTranspose2d) else F.conv2d
    stride, padding = (module.stride, module.padding) if isinstance(module, ConvTranspose2d) else (module.stride[0], module.padding[0])
    return lambda x: conv(x, module.weight, module.bias, stride, padding)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("make, size", [(lambda: SmallMapConv2d(24, 40, 4, 2, 1), 8), (lambda: ConvTranspose2d(40, 24, 4, 2, 1), 4),
                                        (lambda: SmallMapConv2d(24, 40, 4, 2, 1, bias=False), 8)])
def test_small_maps_take_the_gemm_and_match_the_library(make, size, autocast):
    torch.manual_seed(0)
    module = make()
    c_in = module.weight.shape[0 if isinstance(module, ConvTranspose2d) else 1]
    x = torch.randn(5, c_in, size, size)
    ours = backprop(module, module, x, autocast)
    theirs = backprop(library(module), module, x, autocast)

    assert gemm_path(module, x)
    assert ours["y"].dtype == theirs["y"].dtype == (torch.bfloat16 if autocast else torch.float32)
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype, key  # parameter grads in the parameters' own dtype
    if not autocast:
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-5, msg=key)
        return
    # Under bf16 the library's own kernels round differently from chip to chip (a weight gradient
    # of ~20 may come back in steps of 0.125), so both are held to the fp32 answer, as a whole.
    exact = backprop(library(module), module, x, autocast=False)
    for key in ours:
        for result in (ours, theirs):
            error = (result[key].float() - exact[key]).norm() / exact[key].norm()
            assert error < 1e-2, (key, error.item())


def test_larger_maps_and_inference_keep_the_library_path():
    torch.manual_seed(0)
    conv = SmallMapConv2d(8, 16, 4, 2, 1)
    big = torch.randn(2, 8, 16, 16)  # 8×8 out: more than SMALL_MAP_POSITIONS
    assert (big.shape[-1] // 2) ** 2 > SMALL_MAP_POSITIONS
    assert not gemm_path(conv, big)
    with torch.no_grad():
        assert not gemm_path(conv, torch.randn(2, 8, 8, 8))
    assert not gemm_path(conv, torch.randn(8, 8, 8)) and not gemm_path(conv, torch.randn(0, 8, 8, 8))
    conv(torch.randn(8, 8, 8)).sum().backward()  # unbatched, as nn.Conv2d allows: the library's path
    conv(torch.randn(0, 8, 8, 8)).sum().backward()  # an empty batch too


def test_a_vae_step_has_the_same_gradients_either_way(monkeypatch):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(latent_dim=8, hidden=8))
    x = torch.rand(4, 3, 64, 64) * 2 - 1

    def step():
        torch.manual_seed(1)  # the same reparameterisation noise
        recon, mu, logvar = vae(x)
        (recon - x).pow(2).mean().add(mu.pow(2).mean()).backward()
        g = {n: p.grad.clone() for n, p in vae.named_parameters()}
        vae.zero_grad()
        return g

    ours = step()
    monkeypatch.setattr("models_core.small_map_conv.SMALL_MAP_POSITIONS", 0)  # the library everywhere
    theirs = step()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-6, msg=name)
