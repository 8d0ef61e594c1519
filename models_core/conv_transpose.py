"""Transposed convolution, written out from first principles.

A stride-s convolution is y = W x for a sparse matrix W; its transpose y = W^T x spreads each
input pixel over a k×k patch of the output, patches s pixels apart, summing where they overlap.
The same result comes from an ordinary convolution over a "dilated" input: insert s-1 zeros
between input pixels, pad by k-1-p, and correlate with the spatially flipped kernel whose
in/out channel axes are swapped (Dumoulin & Visin 2016, "A guide to convolution arithmetic", §4).
"""

import math
from typing import Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F

from models_core import small_map_conv

ConvImpl = Literal["native", "scratch"]
CONV_IMPLS = get_args(ConvImpl)


def conv_transpose2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
    """Same maths as F.conv_transpose2d (weight is (C_in, C_out, k, k)), built from conv2d."""
    batch, c_in, h, w = x.shape
    k = weight.shape[-1]

    # Zero insertion: (B, C_in, H, W) -> (B, C_in, (H-1)s+1, (W-1)s+1)
    if stride > 1:
        dilated = x.new_zeros(batch, c_in, (h - 1) * stride + 1, (w - 1) * stride + 1)
        dilated[:, :, ::stride, ::stride] = x
    else:
        dilated = x

    # Full padding k-1, reduced by the transposed conv's own padding; a negative pad crops.
    pad = k - 1 - padding
    dilated = F.pad(dilated, (pad, pad, pad, pad))

    # (C_in, C_out, k, k) -> (C_out, C_in, k, k), flipped in both spatial axes
    kernel = weight.transpose(0, 1).flip(-1, -2)
    return F.conv2d(dilated, kernel, bias)  # (B, C_out, (H-1)s - 2p + k, ...)


class ConvTranspose2d(nn.Module):
    """Transposed convolution with the parameter layout of nn.ConvTranspose2d.

    `impl` picks the kernel: "native" (cuDNN/oneDNN, the fast default; on the CPU the weight
    gradient out of a small map is a GEMM, see small_map_conv) or "scratch" (the zero-insertion
    formulation above). Both share weights, so a checkpoint runs with either.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        impl: ConvImpl = "native",
    ):
        super().__init__()
        if impl not in CONV_IMPLS:
            raise ValueError(f"impl must be one of {', '.join(CONV_IMPLS)}, got {impl!r}")
        self.stride, self.padding, self.impl = stride, padding, impl
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The same default init as nn.ConvTranspose2d (fan_in is computed over dim 1 for it).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "native":
            return small_map_conv.conv2d(x, self.weight, self.bias, self.stride, self.padding, transposed=True)
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        c_in, c_out, k, _ = self.weight.shape
        return (f"{c_in}, {c_out}, kernel_size={k}, stride={self.stride}, "
                f"padding={self.padding}, impl={self.impl}")
