"""Dynamic batching: concurrent decode requests for one model version share a forward pass."""

import asyncio
import collections
import contextlib
import threading
import time
from concurrent.futures import Executor
from typing import Callable, ContextManager

import torch

from service.admission import Retired, RowBudget

# Rows that make a second pass worth starting beside a running one. Small passes cost more per face
# (README, Benchmarks), and each one beside a running pass takes cores from it. At /sample n=1 and 16 connections, half the
# passes had one or two rows when every free thread started at once.
MIN_ROWS_BESIDE = 8


class DecodeBatcher:
    """Decodes the latents of concurrent requests in one forward pass on the inference threads and
    hands each request its rows; admits them through its RowBudget (service/admission.py).

    A batch is whatever queued while the previous pass ran (up to `max_batch` rows), plus what
    arrives within `max_wait` seconds. An inference thread takes the next batch itself, without a
    turn of the event loop, which is busiest under overload. Up to `parallel` drains run at once;
    one starts beside a running pass only once `min_rows_beside` rows wait or the running pass is
    long (half a batch or more). Every row taken is decoded or failed with Retired; rows whose
    request has gone (future cancelled) are dropped before the pass and counted by `on_drop`.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], executor: Executor, max_batch: int,
                 max_wait: float, max_queue_s: float, on_batch: Callable[[int], None] = lambda n: None,
                 on_drop: Callable[[int], None] = lambda n: None, after_pass: Callable[[bool], None] = lambda idle: None,
                 parallel: int = 1, forward_pass: Callable[[], ContextManager] = contextlib.nullcontext,
                 min_rows_beside: int = MIN_ROWS_BESIDE):
        self.forward, self.executor, self.max_batch, self.max_wait = forward, executor, max_batch, max_wait
        self.parallel, self.forward_pass = parallel, forward_pass
        self.min_rows_beside = min(min_rows_beside, max_batch)
        self.after_pass = after_pass  # on the executor thread, told whether the queue is empty
        self.budget = RowBudget(max_batch, max_queue_s)
        self.on_batch, self.on_drop = on_batch, on_drop
        self.loop = asyncio.get_running_loop()
        self.items: collections.deque = collections.deque()  # (latents, future): appended on the loop, taken by the thread
        self.queued_rows = 0  # rows in items (those of requests since abandoned too, until taken)
        self.taken_rows = 0  # rows the drains took and have not yet answered
        self.arrived = threading.Condition()  # guards items, taken, drains and stopped
        self.taken: set[asyncio.Future] = set()  # what the drains hold between the queue and their answer
        self.drains = 0  # drains queued on or running in the executor
        self.passes = 0  # forward passes running now
        self.stopped = False

    @property
    def depth(self) -> int:
        return len(self.items)

    @property
    def idle(self) -> bool:
        return not self.drains and not self.items

    async def decode(self, z: torch.Tensor) -> torch.Tensor:
        with self.budget.admit(len(z)):
            future = self.loop.create_future()
            with self.arrived:
                self.items.append((z, future))
                self.queued_rows += len(z)
                self.arrived.notify()
                start = not self.drains or (self.drains < self.parallel and (
                    self.queued_rows >= self.min_rows_beside or self.taken_rows >= self.max_batch // 2))
                self.drains += start
            if start:
                self.executor.submit(self.drain)
            return await future

    def drain(self) -> None:
        """On the executor: decode one batch, then queue again while rows remain."""
        batch = self.take()
        if batch:
            self.decode_batch(batch)
        with self.arrived:
            self.taken.difference_update(f for _, f in batch)
            self.taken_rows -= sum(len(z) for z, _ in batch)
            idle = not self.items or self.stopped
            if idle:
                self.drains -= 1
        self.after_pass(idle and not self.drains)
        if idle:
            return
        try:
            self.executor.submit(self.drain)
        except RuntimeError:  # the executor is shut down: the server is stopping
            with self.arrived:
                self.drains -= 1

    def take(self) -> list:
        with self.arrived:
            batch, rows = [], 0
            deadline = time.monotonic() + self.max_wait
            while rows < self.max_batch and not self.stopped:
                if self.items:  # whatever queued up while the last forward pass ran joins this one
                    batch.append(self.items.popleft())
                    rows += len(batch[-1][0])
                    self.queued_rows -= len(batch[-1][0])
                else:
                    remaining = deadline - time.monotonic()
                    if not batch or remaining <= 0 or not self.arrived.wait(remaining):
                        break
            self.taken.update(future for _, future in batch)
            self.taken_rows += rows
            return batch

    def decode_batch(self, batch: list) -> None:
        live = [(z, f) for z, f in batch if not f.done()]
        dropped = sum(len(z) for z, f in batch if f.cancelled())
        if dropped:
            self.on_drop(dropped)
        if not live:
            return
        rows = sum(len(z) for z, _ in live)
        try:
            with self.arrived:
                self.passes += 1
                beside = self.passes  # this model's passes running, this one included
            try:
                with self.forward_pass():
                    start = time.perf_counter()
                    out = self.forward(torch.cat([z for z, _ in live]))
                    seconds = time.perf_counter() - start
            finally:
                with self.arrived:
                    self.passes -= 1
            self.budget.observe_pass(rows, seconds, beside)
            self.on_batch(rows)
            answers = [(f, images) for (_, f), images in zip(live, out.split([len(z) for z, _ in live]))]
            self.call_on_loop(answer, answers)
        except Exception as e:  # a failed forward fails its requests, not the batcher
            self.call_on_loop(fail, [f for _, f in live], e)

    def call_on_loop(self, fn, *args) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Refuse new rows and fail every row not yet answered with Retired (on the loop)."""
        self.budget.close()
        with self.arrived:
            self.stopped = True
            left = [f for _, f in self.items] + list(self.taken)
            self.items.clear()
            self.queued_rows = 0
            self.arrived.notify_all()
        fail(left, Retired())

    async def retire(self, in_use: Callable[[], bool] = lambda: False, grace: float = 30.0) -> None:
        """Stop once nothing is queued, taken or `in_use` (requests still holding this version may
        decode until then). Past `grace` seconds, stop anyway: what is left fails with Retired."""
        deadline = self.loop.time() + grace
        while (not self.idle or in_use()) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        self.stop()


def answer(answers: list[tuple[asyncio.Future, torch.Tensor]]) -> None:
    for future, images in answers:
        if not future.done():
            future.set_result(images)


def fail(futures: list[asyncio.Future], error: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
