"""GAN projection as a service: a bounded number at once, in time slices on the inference threads.

A projection is hundreds of forward and backward passes. Run in one piece it would hold an
inference thread for seconds and decode requests would wait behind it, so it runs in slices
of `slice_s` seconds, each queued behind whatever else is waiting for the threads: decoding goes
on between slices. When the request is cancelled (its client disconnected, its deadline passed),
no further slice is queued.
"""

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import torch

from models_core.images import to_uint8
from models_core.projection import Projection, ProjectionConfig


class ProjectorBusy(Exception):
    """max_running projections are running; the caller answers 503."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after


@dataclass
class Projected:
    z: torch.Tensor  # (B, D) on the CPU
    images: torch.Tensor  # G(z), uint8 (B, C, H, W)
    psnr: list[float]  # dB against each face
    steps: int
    seconds: float

    def headers(self) -> dict[str, str]:
        return {"X-Projection-PSNR": ",".join(f"{p:.2f}" for p in self.psnr),
                "X-Projection-Steps": str(self.steps), "X-Projection-Seconds": f"{self.seconds:.2f}"}


def advance_for(p: Projection, seconds: float) -> int:
    """Steps until `seconds` have passed (at least one); how many ran."""
    start, before = time.perf_counter(), p.done
    while not p.finished and (p.done == before or time.perf_counter() - start < seconds):
        p.advance(1)
    return p.done - before


def finish(p: Projection) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z, images, psnr = p.result()
    return z.float().cpu(), to_uint8(images.cpu()), psnr.cpu()


class Projector:
    def __init__(self, run: Callable[..., Awaitable], max_running: int, time_limit_s: float, slice_s: float = 0.05,
                 on_steps: Callable[[str, int], None] = lambda model, n: None,
                 on_end: Callable[[str, str], None] = lambda model, outcome: None):
        self.run = run  # fn(*args) on an inference thread
        self.max_running, self.time_limit_s, self.slice_s = max_running, time_limit_s, slice_s
        self.on_steps, self.on_end = on_steps, on_end
        self.running = 0

    async def project(self, served, faces: torch.Tensor, steps: int, time_limit_s: float | None = None) -> Projected:
        """Faces (B, C, H, W) in [-1, 1] projected into `served`'s generator, stopping at `steps` or at the time
        limit (the service's, or a shorter one for this request). Raises ProjectorBusy."""
        limit = min(self.time_limit_s, time_limit_s or math.inf)
        if self.running >= self.max_running:
            raise ProjectorBusy(retry_after=max(1, math.ceil(self.time_limit_s / 4)))
        self.running += 1
        loop = asyncio.get_running_loop()
        outcome = "cancelled"
        try:
            start = loop.time()
            cfg = ProjectionConfig(steps=steps)
            p = await self.run(served.start_projection, faces, cfg)
            # one slice at least: a start that took the whole budget (a busy machine) is no answer
            while not p.finished and (p.done == 0 or loop.time() - start < limit):
                n = await self.run(advance_for, p, self.slice_s)
                self.on_steps(served.name, n)
            z, images, psnr = await self.run(finish, p)
            outcome = "done" if p.finished else "timed_out"
            return Projected(z, images, psnr.tolist(), p.done, loop.time() - start)
        finally:
            self.running -= 1
            self.on_end(served.name, outcome)
