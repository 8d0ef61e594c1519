"""Convolutions into or out of a small map, whose weight gradient is one matrix product.

On the CPU, oneDNN (torch 2.14) computes the weight gradient of a k4 s2 convolution between an
8×8 and a 4×4 map several times slower than the matrix product it amounts to, in bf16 and fp32
alike (README, Benchmarks): for the seed VAE's 512->1024 encoder conv and the decoder's
1024->512 transposed conv, a third of the training step. Here the forward pass and the input gradient stay with the
library, which is fast at every shape, and the weight gradient is the im2col product
    conv:       dW = dY · unfold(X)ᵀ       (dY: C_out × B·L, unfold(X): B·L × C_in·k²)
    transposed: dW = X · unfold(dY)ᵀ       (X: C_in × B·L, unfold(dY): B·L × C_out·k²)
where L is the small map's positions. `bench/roofline.py --before` times the steps both ways.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# Positions of the small map (the conv's output, the transposed conv's input) up to which the weight
# gradient is a GEMM: 16 is 4×4. At 8×8 the library's own is the faster (bench/roofline.py --before).
SMALL_MAP_POSITIONS = 16


class _SmallMapConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, padding: int, transposed: bool, dtype: torch.dtype | None):
        # The weight is cast here, not before: its gradient then goes straight into the parameter's own
        # dtype and memory layout (channels_last in the trainer) in one copy, not three.
        w = weight if dtype is None else weight.to(dtype)
        b = bias if dtype is None or bias is None else bias.to(dtype)
        ctx.save_for_backward(x, w, weight)
        ctx.stride, ctx.padding, ctx.transposed, ctx.has_bias = stride, padding, transposed, bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        conv = F.conv_transpose2d if transposed else F.conv2d
        return conv(x, w, b, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, w, weight = ctx.saved_tensors
        s, p, transposed = ctx.stride, ctx.padding, ctx.transposed
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:  # asking the library for the bias gradient too would have it compute the slow weight gradient
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, w, None, [s, s], [p, p], [1, 1], transposed, [0, 0], 1, [True, False, False])[0]
        if need_b and ctx.has_bias:
            grad_b = grad_out.sum((0, 2, 3), dtype=torch.float32).to(ctx.bias_dtype)
        if need_w:
            k = w.shape[-1]
            # The small map's side: its positions are the GEMM's inner dimension with the batch.
            small, patches = (x, grad_out) if transposed else (grad_out, x)
            cols = F.unfold(patches, k, padding=p, stride=s)  # (B, C·k², L)
            rows = small.flatten(2).transpose(0, 1).reshape(small.shape[1], -1)  # (C', B·L)
            product = rows @ cols.transpose(1, 2).reshape(-1, cols.shape[1])
            grad_w = torch.empty_like(weight).copy_(product.view(weight.shape))
        return grad_x, grad_w, grad_b, None, None, None, None


def takes_gemm(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, transposed: bool = False) -> bool:
    """Whether conv2d computes this convolution's weight gradient as a GEMM: a CPU batch, a weight
    to train, and a small map (at most SMALL_MAP_POSITIONS positions)."""
    small = x.shape[-2] * x.shape[-1] if transposed else _out_positions(x, weight, stride, padding)
    return (x.device.type == "cpu" and x.dim() == 4 and x.shape[0] > 0 and small <= SMALL_MAP_POSITIONS
            and torch.is_grad_enabled() and weight.requires_grad)


def conv2d(x, weight, bias=None, stride: int = 1, padding: int = 0, transposed: bool = False) -> torch.Tensor:
    """F.conv2d, or F.conv_transpose2d with `transposed`, with the GEMM weight gradient where it pays.
    Square kernels, the same stride and padding on both axes, a batch (B, C, H, W)."""
    if not takes_gemm(x, weight, stride, padding, transposed):
        conv = F.conv_transpose2d if transposed else F.conv2d
        return conv(x, weight, bias, stride, padding)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None  # as autocast casts conv2d
    x = x if dtype is None else x.to(dtype)
    with torch.autocast("cpu", enabled=False):
        return _SmallMapConv.apply(x, weight, bias, stride, padding, transposed, dtype)


def _out_positions(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> int:
    k = weight.shape[-1]
    return ((x.shape[-2] + 2 * padding - k) // stride + 1) * ((x.shape[-1] + 2 * padding - k) // stride + 1)


class SmallMapConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) whose small-map weight gradient is a GEMM on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = (self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
                 and not isinstance(self.padding, str) and len({*self.kernel_size}) == len({*self.stride}) == len({*self.padding}) == 1)
        if not plain:  # shapes the GEMM above does not cover
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride[0], self.padding[0])
