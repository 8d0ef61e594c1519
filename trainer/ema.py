"""Exponential moving average of a network's weights (the published GAN generator)."""

import copy

import torch
import torch.nn as nn


class EMA:
    """ema = beta * ema + (1 - beta) * weights after every step; buffers (BN statistics) are copied.

    Not torch.optim.swa_utils.AveragedModel: that one leaves buffers alone (use_buffers=False) or
    averages them (True), where BN statistics must be the trained network's, and its EMA has a fixed decay.

    beta ramps up as min(decay, (1 + n) / (10 + n)) so early averages are not dominated by the
    random initialisation (the warm-up used by TensorFlow's ExponentialMovingAverage).
    """

    def __init__(self, net: nn.Module, decay: float = 0.999):
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.updates += 1
        beta = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, weight in zip(self.net.parameters(), net.parameters()):
            average.lerp_(weight, 1 - beta)
        for ema_buffer, buffer in zip(self.net.buffers(), net.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.updates = int(state["updates"])
