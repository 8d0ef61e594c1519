"""Admission: whether a model takes more work, decided in one place.

Each served version has a RowBudget, by rows rather than requests: rows are admitted while those
already pending (queued, being decoded, or held by `admit` for other work on the inference
threads) would be done within `max_queue_s` at the rate recent forward passes ran, and always when
nothing is pending, so a large request is never refused by an idle model. Once it refuses, a
model is `saturated` until its backlog falls below 90% of the budget: near the bound requests
would otherwise flip between admitted and refused, each routed, validated and sampled first.

The routes that decode say so (`@decodes`), and Admission refuses their requests in front of the
whole application while their model is saturated, before FastAPI's own layers and our middleware
see them, for a fraction of the CPU a trip through the stack costs (README, Benchmarks).

That is still CPU taken from the decoder, and clients retrying the instant they are refused, as
load generators and naive retry loops do, would spend it without bound. So each 503 is held (a
sleeping task, no CPU): `pace` seconds, or longer while so many clients are being refused that
answering them every `pace` would exceed `max_rate` refusals a second, though never past the
Retry-After it carries, and only while its client is still there. A GET that revalidates
(If-None-Match) goes through: the route answers it 304 or from the PNG cache without decoding,
when it can, and its 503 is held like ours when not.
"""

import asyncio
import contextlib
import math
import time

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ApiError, send_error
from service.metrics import echoed_request_id


class QueueFull(Exception):
    """Admitting these rows would queue more work than the bound; the caller answers 503."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after


class Retired(Exception):
    """The version was retired (swapped out or evicted) before this work was done."""


class RowBudget:
    """One served version's admission: the rows it may have pending, from the rate of its passes."""

    def __init__(self, max_batch: int, max_queue_s: float):
        self.max_batch, self.max_queue_s = max_batch, max_queue_s
        self.pending_rows = 0  # admitted rows whose requests are still waiting for them (loop only)
        self.rows_per_s: float | None = None  # moving average over recent passes of at least half a batch
        self.refusing = False  # refused a request and the backlog has not yet fallen below 90% of the budget
        self.closed = False

    @property
    def rows(self) -> int:
        """Rows that may be pending: what recent passes decode in max_queue_s, at least four full batches."""
        floor = 4 * self.max_batch
        if self.rows_per_s is None:
            return floor
        return max(floor, int(self.rows_per_s * self.max_queue_s))

    @property
    def saturated(self) -> bool:
        """Refusing every request until the backlog has fallen below 90% of the budget."""
        if self.refusing and self.pending_rows < 0.9 * self.rows:
            self.refusing = False
        return self.refusing or self.pending_rows >= self.rows

    def retry_after(self) -> int:
        return max(1, math.ceil(self.pending_rows / (self.rows_per_s or self.max_batch)))

    @contextlib.contextmanager
    def admit(self, rows: int):
        """Hold `rows` of the budget for the block, or raise QueueFull (or Retired, once closed) at once."""
        if self.closed:
            raise Retired
        if self.pending_rows and (self.saturated or self.pending_rows + rows > self.rows):
            self.refusing = True
            raise QueueFull(self.retry_after())
        self.pending_rows += rows
        try:
            yield
        finally:
            self.pending_rows -= rows

    def observe_pass(self, rows: int, seconds: float, beside: int) -> None:
        """A forward pass of `rows` took `seconds` with `beside` passes of this version running (it included)."""
        if rows >= self.max_batch // 2:  # small passes cost more per row; a backlog is decoded in full ones
            rate = rows / max(seconds, 1e-6) * beside  # passes beside this one drain the same queue
            self.rows_per_s = rate if self.rows_per_s is None else 0.8 * self.rows_per_s + 0.2 * rate

    def close(self) -> None:
        self.closed = True


def decodes(endpoint):
    """Marks a route whose requests decode faces: Admission refuses them while their model is saturated."""
    endpoint.decodes = True
    return endpoint


def decoding_routes(routers: list[APIRouter]) -> frozenset[tuple[str, str]]:
    """(method, path) of every route marked @decodes, in routers included without a prefix."""
    return frozenset((method, r.path) for router in routers for r in router.routes
                     if isinstance(r, APIRoute) and getattr(r.endpoint, "decodes", False) for method in r.methods)


class Admission:
    """`inner` (the application's ASGI entry point) behind the refusal of saturated models; `app`
    holds the registry and metrics in its state, and create_app sets `decoding`."""

    def __init__(self, inner: ASGIApp, app, pace: float, max_rate: float):
        self.inner, self.app, self.pace, self.max_rate = inner, app, pace, max_rate
        self.held = 0  # refusals being held now
        self.decoding: frozenset[tuple[str, str]] = frozenset()  # (method, path) of the routes that decode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            served = self.saturated_model(scope) if (scope["method"], scope["path"]) in self.decoding else None
            if served is not None and not revalidates(scope):
                return await self.refuse(served, scope, receive, send)
            if served is not None:  # a revalidation the route cannot answer without decoding is refused there
                send = self.held_if_refused(served, send)
        await self.inner(scope, receive, send)

    def held_if_refused(self, served, send: Send) -> Send:
        """The route's 503 held like ours, so that a retry loop sending If-None-Match cannot skip the pause."""

        async def paced(message):
            if message["type"] == "http.response.start" and message["status"] == 503:
                await self.hold(served)
            await send(message)

        return paced

    def saturated_model(self, scope: Scope):
        """The served model a decoding request asks for, if it is saturated (as the routes read model and version)."""
        registry = getattr(self.app.state, "registry", None)
        if registry is None:
            return None  # not started
        query = QueryParams(scope["query_string"])
        served = registry.latest.get(query.get("model") or registry.default_model())
        if served is None or query.get("version") not in (None, str(served.version)):
            return None  # unknown models and older versions: the route answers
        return served if served.budget.saturated else None

    async def hold(self, served, receive: Receive | None = None) -> bool:
        """Hold a refusal `pace` seconds, or N / max_rate while N refusals are held (N clients retrying
        at once then get at most `max_rate` answers a second between them), never past the
        Retry-After it will carry. With `receive`, the hold ends when the client goes: False then."""
        seconds = min(max(self.pace, self.held / self.max_rate), served.budget.retry_after())
        self.held += 1
        try:
            if receive is None:
                await asyncio.sleep(seconds)
                return True
            try:  # a deadline on this very task: no task of its own per held client
                async with asyncio.timeout(seconds):
                    await disconnected(receive)
                return False
            except TimeoutError:
                return True
        finally:
            self.held -= 1

    async def refuse(self, served, scope: Scope, receive: Receive, send: Send) -> None:
        start, status = time.perf_counter(), 500
        try:
            if not await self.hold(served, receive):
                status = 499  # the client went away while held: nothing to answer
                return
            e = busy(served, QueueFull(served.budget.retry_after()))
            headers = [(k.lower().encode(), v.encode()) for k, v in e.headers.items()] + echoed_request_id(scope)
            await send_error(send, e.status, e.error, e.detail, headers)
            status = e.status
        finally:
            self.app.state.metrics.observe_request(scope["path"], served.name, status, time.perf_counter() - start)


async def disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # a body nobody will read


def revalidates(scope: Scope) -> bool:
    return scope["method"] == "GET" and any(k == b"if-none-match" for k, _ in scope["headers"])


@contextlib.contextmanager
def as_api_errors(served):
    """The admission's refusals as the API's 503s: busy (QueueFull), or the version just retired."""
    try:
        yield
    except QueueFull as e:
        raise busy(served, e) from None
    except Retired:
        raise ApiError(503, f"{served.name} v{served.version} was just retired", "retry: the request will be served "
                       "by the version now being served", headers={"Retry-After": "1"}) from None


def busy(served, e: QueueFull) -> ApiError:
    """The 503 for a model that admits nothing more, from Admission or from a route."""
    return ApiError(503, f"model {served.name!r} is busy", f"more work is queued than it does in "
                    f"{served.budget.max_queue_s:g} s; retry after {e.retry_after} s",
                    headers={"Retry-After": str(e.retry_after)})
