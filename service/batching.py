"""Dynamic batching: concurrent decode requests for one model version share a forward pass."""

import asyncio
import contextlib
from concurrent.futures import Executor
from typing import Callable

import torch


class QueueFull(Exception):
    """The model's queue is at its bound; the caller answers 503 with Retry-After."""


class DecodeBatcher:
    """Collects latents from concurrent requests for up to `max_wait` seconds (or `max_batch` rows),
    decodes them in one forward pass on the executor thread, and hands each request its rows."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], executor: Executor, max_batch: int,
                 max_wait: float, queue_size: int, on_batch: Callable[[int], None] = lambda n: None):
        self.forward, self.executor, self.max_batch, self.max_wait = forward, executor, max_batch, max_wait
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.on_batch = on_batch
        self.busy = False
        self.worker = asyncio.get_running_loop().create_task(self.run())

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    async def decode(self, z: torch.Tensor) -> torch.Tensor:
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((z, future))
        except asyncio.QueueFull:
            raise QueueFull from None
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            rows = len(items[0][0])
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch:
                try:
                    item = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                items.append(item)
                rows += len(item[0])
            self.busy = True
            try:
                out = await loop.run_in_executor(self.executor, self.forward, torch.cat([z for z, _ in items]))
                self.on_batch(rows)
                for (z, future), images in zip(items, out.split([len(z) for z, _ in items])):
                    if not future.done():
                        future.set_result(images)
            except Exception as e:  # a failed forward fails its requests, not the worker
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
            finally:
                self.busy = False

    async def retire(self, grace: float = 30.0) -> None:
        """Stop once the queued and in-flight requests are done (they finish on these weights)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while (self.depth or self.busy) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.worker
