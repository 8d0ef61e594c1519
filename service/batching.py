"""Dynamic batching: concurrent decode requests for one model version share a forward pass."""

import asyncio
import contextlib
from concurrent.futures import Executor
from typing import Callable

import torch


class QueueFull(Exception):
    """The model's queue is at its bound; the caller answers 503 with Retry-After."""


class Retired(Exception):
    """The batcher was retired (its version swapped out or evicted) before these rows were decoded."""


class DecodeBatcher:
    """Decodes the latents of concurrent requests in one forward pass on the executor thread and
    hands each request its rows. A batch is whatever queued up while the previous pass ran (up to
    `max_batch` rows), plus what arrives within `max_wait` seconds: with max_wait 0 (the default)
    a request alone is decoded at once, and under load batches form by themselves.

    Every row taken is either decoded or failed with Retired; none is left waiting. Rows whose
    request has gone (its future cancelled: the client disconnected or its deadline passed) are
    dropped before the forward pass and counted by `on_drop`.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], executor: Executor, max_batch: int,
                 max_wait: float, queue_size: int, on_batch: Callable[[int], None] = lambda n: None,
                 on_drop: Callable[[int], None] = lambda n: None):
        self.forward, self.executor, self.max_batch, self.max_wait = forward, executor, max_batch, max_wait
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.on_batch, self.on_drop = on_batch, on_drop
        self.taken: list = []  # items the worker holds between the queue and their answer
        self.stopped = False
        self.worker = asyncio.get_running_loop().create_task(self.run())

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    @property
    def idle(self) -> bool:
        return not self.taken and self.queue.empty()

    async def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.stopped:
            raise Retired
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((z, future))
        except asyncio.QueueFull:
            raise QueueFull from None
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self.taken = [await self.queue.get()]
                rows = len(self.taken[0][0])
                deadline = loop.time() + self.max_wait
                while rows < self.max_batch:
                    try:  # whatever queued up while the last forward pass ran joins this one
                        item = self.queue.get_nowait()
                    except asyncio.QueueEmpty:
                        if deadline <= loop.time():
                            break
                        try:
                            item = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                        except TimeoutError:
                            break
                    self.taken.append(item)
                    rows += len(item[0])
                await self.decode_taken(loop)
                self.taken = []
        finally:  # cancelled: whatever was taken or is still queued is answered, never dropped silently
            self.stopped = True
            self.fail_all(Retired())

    async def decode_taken(self, loop) -> None:
        live = [(z, f) for z, f in self.taken if not f.done()]
        dropped = sum(len(z) for z, f in self.taken if f.cancelled())
        if dropped:
            self.on_drop(dropped)
        if not live:
            return
        try:
            out = await loop.run_in_executor(self.executor, self.forward, torch.cat([z for z, _ in live]))
            self.on_batch(sum(len(z) for z, _ in live))
            for (z, future), images in zip(live, out.split([len(z) for z, _ in live])):
                if not future.done():
                    future.set_result(images)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a failed forward fails its requests, not the worker
            for _, future in live:
                if not future.done():
                    future.set_exception(e)

    def fail_all(self, error: Exception) -> None:
        items, self.taken = self.taken, []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        for _, future in items:
            if not future.done():
                future.set_exception(error)

    async def retire(self, in_use: Callable[[], bool] = lambda: False, grace: float = 30.0) -> None:
        """Stop once nothing is queued, taken or `in_use` (requests still holding this version may
        decode until then). Past `grace` seconds, stop anyway: what is left fails with Retired."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while (not self.idle or in_use()) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        self.worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.worker
        self.stopped = True  # also when the worker was cancelled before it first ran
        self.fail_all(Retired())
