"""Turning requests away before they cost anything, when their model can take nothing more.

The routes admit each request by the rows it brings (DecodeBatcher.admit). Admission runs in
front of the whole application, FastAPI's own layers and our middleware included: while a model's
budget is already spent, a request for it gets its 503 before anything else looks at it, for a
fraction of the CPU a trip through the stack costs (README, Benchmarks).

That is still CPU taken from the decoder, and clients retrying the instant they are refused, as
load generators and naive retry loops do, would spend it without bound. So each 503 is held (a
sleeping task, no CPU): `pace` seconds, or longer while so many clients are being refused that
answering them every `pace` would exceed `max_rate` refusals a second, though never past the
Retry-After it carries, and only while its client is still there. A GET that revalidates
(If-None-Match) goes through: the route answers it 304 or from the PNG cache without decoding,
when it can, and its 503 is held like ours when not.
"""

import asyncio
import time
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

from service.batching import QueueFull
from service.errors import ApiError, send_error
from service.methods import documented_methods
from service.metrics import echoed_request_id

DECODING_ROUTES = frozenset({"/sample", "/interpolate", "/reconstruct", "/pca-grid", "/pca-point", "/latent-grid", "/project", "/edit"})


class Admission:
    """`inner` (the application's ASGI entry point) behind the refusal of saturated models; `app`
    holds the registry and metrics in its state and the routes in its schema."""

    def __init__(self, inner: ASGIApp, app, pace: float, max_rate: float):
        self.inner, self.app, self.pace, self.max_rate = inner, app, pace, max_rate
        self.held = 0  # refusals being held now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in DECODING_ROUTES:
            served = self.saturated_model(scope)
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
        registry = getattr(self.app.state, "registry", None)
        method = scope["method"]
        if registry is None or method == "OPTIONS" or method not in documented_methods(self.app)[scope["path"]]:
            return None  # not started, or a method the path does not take: the 405 and OPTIONS answers come first
        query = scope["query_string"]
        served = registry.latest.get(query_value(query, b"model") or registry.default_model())
        if served is None or query_value(query, b"version") not in (None, str(served.version)):
            return None  # unknown models and older versions: the route answers
        return served if served.batcher.saturated else None

    async def hold(self, served, receive: Receive | None = None) -> bool:
        """Hold a refusal `pace` seconds, or N / max_rate while N refusals are held (N clients retrying
        at once then get at most `max_rate` answers a second between them), never past the
        Retry-After it will carry. With `receive`, the hold ends when the client goes: False then."""
        seconds = min(max(self.pace, self.held / self.max_rate), served.batcher.retry_after())
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
            e = busy(served, QueueFull(served.batcher.retry_after()))
            headers = [(k.lower().encode(), v.encode()) for k, v in e.headers.items()] + echoed_request_id(scope)
            await send_error(send, e.status, e.error, e.detail, headers)
            status = e.status
        finally:
            self.app.state.metrics.observe_request(scope["path"], served.name, status, time.perf_counter() - start)


def query_value(query: bytes, key: bytes) -> str | None:
    """The value of `key` in a query string as the routes see it (the last one, when repeated),
    without parsing the rest."""
    prefix, value = key + b"=", None
    for part in query.split(b"&"):
        if part.startswith(prefix):
            value = part[len(prefix):]
    return None if value is None else unquote_plus(value.decode("latin-1"))


async def disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # a body nobody will read


def revalidates(scope: Scope) -> bool:
    return scope["method"] == "GET" and any(k == b"if-none-match" for k, _ in scope["headers"])


def busy(served, e: QueueFull) -> ApiError:
    """The 503 for a model that admits nothing more, from Admission or from a route."""
    return ApiError(503, f"model {served.name!r} is busy", f"more work is queued than it does in "
                    f"{served.batcher.max_queue_s:g} s; retry after {e.retry_after} s",
                    headers={"Retry-After": str(e.retry_after)})
