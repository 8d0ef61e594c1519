"""The network as served: BatchNorm folded into the layer before it, weights in the computing dtype.

In eval mode BatchNorm is a per-channel affine map, y = scale · x + shift with
scale = γ / sqrt(running_var + ε) and shift = β − running_mean · scale, so it can be multiplied
into the weights and bias of the convolution (or linear layer) that feeds it. The folded network
computes the same function with one pass less over every activation map.
"""

import copy

import torch
import torch.nn as nn

from models_core.conv_transpose import ConvTranspose2d

CONVS = (nn.Conv2d, nn.ConvTranspose2d, ConvTranspose2d)


@torch.no_grad()
def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of `net` in which every BatchNorm2d that follows a convolution, or a
    Linear and an Unflatten to (C, H, W), in an nn.Sequential is folded into that layer and
    replaced by nn.Identity. Any other BatchNorm stays as it is."""
    net = copy.deepcopy(net).eval()
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        for i, bn in enumerate(layers):
            if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or i == 0:
                continue
            prev = layers[i - 1]
            if isinstance(prev, CONVS) and _fold_into_conv(prev, bn):
                seq[i] = nn.Identity()
            elif (isinstance(prev, nn.Unflatten) and prev.dim in (1, -1) and i >= 2 and isinstance(layers[i - 2], nn.Linear)
                  and _fold_into_linear(layers[i - 2], bn, prev.unflattened_size)):
                seq[i] = nn.Identity()
    return net


def serving_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The network as served: BatchNorm folded into the layers before it, the weights stored in the
    dtype it computes in, and convolution weights channels-last, the layout oneDNN and cuDNN run
    fastest. Under bf16 autocast an fp32 network has every weight cast on every call, which for one
    face is most of the work (README, Benchmarks)."""
    net = fold_batchnorm(model).to(dtype=dtype, memory_format=torch.channels_last)
    return net.requires_grad_(False)


def _affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.float()
    shift = -bn.running_mean.float() * scale + (bn.bias.float() if bn.affine else 0)
    return scale, shift


def _fold_into_conv(conv: nn.Module, bn: nn.BatchNorm2d) -> bool:
    if getattr(conv, "groups", 1) != 1 or conv.weight.dim() != 4:
        return False
    scale, shift = _affine(bn)
    # Conv2d weights are (C_out, C_in, k, k); transposed convs' are (C_in, C_out, k, k).
    out_dim = 1 if isinstance(conv, (nn.ConvTranspose2d, ConvTranspose2d)) else 0
    if conv.weight.shape[out_dim] != len(scale):
        return False
    shape = [1, 1, 1, 1]
    shape[out_dim] = -1
    _set_weight_and_bias(conv, conv.weight.float() * scale.view(shape), scale, shift)
    return True


def _fold_into_linear(linear: nn.Linear, bn: nn.BatchNorm2d, unflattened: tuple[int, ...]) -> bool:
    if len(unflattened) != 3 or unflattened[0] != bn.num_features:
        return False
    positions = unflattened[1] * unflattened[2]  # Unflatten(1, (C, H, W)): feature c·H·W + p is channel c
    scale, shift = (t.repeat_interleave(positions) for t in _affine(bn))
    _set_weight_and_bias(linear, linear.weight.float() * scale[:, None], scale, shift)
    return True


def _set_weight_and_bias(layer: nn.Module, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> None:
    dtype = layer.weight.dtype
    bias = shift if layer.bias is None else layer.bias.float() * scale + shift
    layer.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    layer.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
