"""Weight-only int8: every convolution and linear weight stored as int8 with one float32 scale per
output channel (symmetric: scale = max|w| / 127), dequantised to float32 when a version loads.

A file of int8 weights is half the size of bf16 ones. The networks still compute in float, so
the cost is only the rounding of each weight to one of 255 levels of its channel; bench/int8.py
measures what that does to the images.
"""

import torch
import torch.nn as nn

from models_core.conv_transpose import ConvTranspose2d

SCALE_SUFFIX = ".int8_scale"


def output_axis(module: nn.Module) -> int:
    """The axis of a weight's output channels: 1 for transposed convolutions (in, out, kH, kW), else 0."""
    return 1 if isinstance(module, (nn.ConvTranspose2d, ConvTranspose2d)) else 0


def quantize(w: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scales shaped to broadcast against them) with w ≈ values * scales."""
    dims = [d for d in range(w.ndim) if d != axis]
    scale = w.detach().float().abs().amax(dims, keepdim=True).clamp_min(1e-12) / 127
    return (w.detach().float() / scale).round().clamp(-127, 127).to(torch.int8), scale


def quantized_state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """`module`'s state dict under `prefix`, its conv and linear weights as int8 plus their scales,
    every other tensor (biases, BatchNorm) as float32."""
    out = {prefix + k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in module.state_dict().items()}
    for name, m in module.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.ndim >= 2:
            key = prefix + (f"{name}.weight" if name else "weight")
            out[key], out[key + SCALE_SUFFIX] = quantize(w, output_axis(m))
    return out


def dequantized(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every int8 tensor that has a scale as float32 again, without the scales; the rest as it is."""
    out = {}
    for key, value in tensors.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        scale = tensors.get(key + SCALE_SUFFIX)
        out[key] = value.float() * scale if scale is not None else value
    return out

