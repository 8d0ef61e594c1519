"""Dynamic batching: concurrent decode requests for one model version share a forward pass."""

import asyncio
import collections
import contextlib
import math
import threading
import time
from concurrent.futures import Executor
from typing import Callable, ContextManager

import torch

# Rows that make a second pass worth starting beside a running one. Small passes cost more per face
# (README, Benchmarks), and each one beside a running pass takes cores from it. At /sample n=1 and 16 connections, half the
# passes had one or two rows when every free thread started at once.
MIN_ROWS_BESIDE = 8


class QueueFull(Exception):
    """Admitting these rows would queue more work than the bound; the caller answers 503."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after


class Retired(Exception):
    """The batcher was retired (its version swapped out or evicted) before these rows were decoded."""


class DecodeBatcher:
    """Decodes the latents of concurrent requests in one forward pass on the executor thread and
    hands each request its rows. A batch is whatever queued up while the previous pass ran (up to
    `max_batch` rows), plus what arrives within `max_wait` seconds: with max_wait 0 (the default)
    a request alone is decoded at once, and under load batches form by themselves.

    An inference thread takes the next batch itself, without waiting for the event loop: under
    overload the loop is busy turning requests away, and a batcher that needed a turn of the loop
    between passes would leave the model idle while the loop is busiest.  After each pass the
    drain queues itself again behind the executor's other work, so models sharing the threads take
    turns. Up to `parallel` drains run at once, each on its own inference thread, each taking its
    own batch (service/workers.py says why); `forward_pass` is entered around each pass (it sets the
    thread's share of the cores). A drain starts beside a running one only once `min_rows_beside`
    rows wait, or when the running passes are long (half a batch or more): fewer rows wait for a
    short pass to end, and join the next batch.

    Every row taken is either decoded or failed with Retired; none is left waiting. Rows whose
    request has gone (its future cancelled: the client disconnected or its deadline passed) are
    dropped before the forward pass and counted by `on_drop`.

    Admission is by rows, not requests: rows are admitted while the rows already pending (queued,
    being decoded, or reserved by `admit` for other work on the inference threads) would be done
    within `max_queue_s` at the rate recent forward passes ran, and always when nothing is pending,
    so a large request is never refused by an idle model. Once a request is refused the model is
    `saturated` until its backlog falls below 90% of the budget: near the bound, requests would
    otherwise flip between admitted and refused, and every one would be routed, validated and
    sampled before being refused.
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
        self.max_queue_s = max_queue_s
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
        self.pending_rows = 0  # admitted rows whose requests are still waiting for them (loop only)
        self.rows_per_s: float | None = None  # moving average over recent passes of at least half a batch
        self.refusing = False  # refused a request and the backlog has not yet fallen below 90% of the budget

    @property
    def depth(self) -> int:
        return len(self.items)

    @property
    def idle(self) -> bool:
        return not self.drains and not self.items

    @property
    def row_budget(self) -> int:
        """Rows that may be pending: what recent passes decode in max_queue_s, at least four full batches."""
        floor = 4 * self.max_batch
        if self.rows_per_s is None:
            return floor
        return max(floor, int(self.rows_per_s * self.max_queue_s))

    @property
    def saturated(self) -> bool:
        """Refusing every request until the backlog has fallen below 90% of the budget."""
        if self.refusing and self.pending_rows < 0.9 * self.row_budget:
            self.refusing = False
        return self.refusing or self.pending_rows >= self.row_budget

    def retry_after(self) -> int:
        return max(1, math.ceil(self.pending_rows / (self.rows_per_s or self.max_batch)))

    @contextlib.contextmanager
    def admit(self, rows: int):
        """Hold `rows` of this model's budget for the block, or raise QueueFull at once."""
        if self.stopped:
            raise Retired
        if self.pending_rows and (self.saturated or self.pending_rows + rows > self.row_budget):
            self.refusing = True
            raise QueueFull(self.retry_after())
        self.pending_rows += rows
        try:
            yield
        finally:
            self.pending_rows -= rows

    async def decode(self, z: torch.Tensor) -> torch.Tensor:
        with self.admit(len(z)):
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
            if rows >= self.max_batch // 2:  # small passes cost more per row; a backlog is decoded in full ones
                # Passes beside this one drain the same queue: the model's rate is theirs together.
                rate = rows / max(seconds, 1e-6) * beside
                self.rows_per_s = rate if self.rows_per_s is None else 0.8 * self.rows_per_s + 0.2 * rate
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
