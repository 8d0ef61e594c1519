"""Turning requests away before they cost anything, when their model can take nothing more.

The routes admit each request by the rows it brings (DecodeBatcher.admit). This middleware runs
first: while a model's budget is already spent, a request for it gets its 503 before routing,
validation or sampling, so turning clients away stays cheap. The 503 is held for `pace` seconds
(no CPU, only a sleeping task): clients that retry at once, as load generators and naive retry
loops do, otherwise keep the event loop busy with refusals and take the cores the admitted
requests are decoding on. A GET that revalidates (If-None-Match) goes through: the route answers
it 304 or from the PNG cache without decoding, when it can, and its 503 is held like ours when not.
"""

import asyncio
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from service.batching import QueueFull
from service.errors import ApiError, send_error

DECODING_ROUTES = frozenset({"/sample", "/interpolate", "/reconstruct", "/pca-grid", "/pca-point", "/latent-grid", "/project"})


class Admission:
    def __init__(self, app: ASGIApp, pace: float):
        self.app, self.pace = app, pace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in DECODING_ROUTES:
            served = self.saturated_model(scope)
            if served is not None and not revalidates(scope):
                scope.setdefault("state", {}).update(model=served.name, endpoint=scope["path"])
                return await self.busy(served, send)
            if served is not None:  # a revalidation the route cannot answer without decoding is refused there
                send = self.held_if_refused(send)
        await self.app(scope, receive, send)

    def held_if_refused(self, send: Send) -> Send:
        """The route's 503 held like ours, so that a retry loop sending If-None-Match cannot skip the pause."""

        async def paced(message):
            if message["type"] == "http.response.start" and message["status"] == 503:
                await asyncio.sleep(self.pace)
            await send(message)

        return paced

    @staticmethod
    def saturated_model(scope: Scope):
        registry = getattr(scope["app"].state, "registry", None)
        if registry is None:
            return None
        query = parse_qs(scope["query_string"].decode("latin-1"))
        served = registry.latest.get(query.get("model", [None])[0] or registry.default_model())
        if served is None or query.get("version", [str(served.version)])[0] != str(served.version):
            return None  # unknown models and older versions: the route answers
        return served if served.batcher.saturated else None

    async def busy(self, served, send: Send) -> None:
        await asyncio.sleep(self.pace)
        e = busy(served, QueueFull(served.batcher.retry_after()))
        await send_error(send, e.status, e.error, e.detail, [(k.lower().encode(), v.encode()) for k, v in e.headers.items()])


def revalidates(scope: Scope) -> bool:
    return scope["method"] == "GET" and any(k == b"if-none-match" for k, _ in scope["headers"])


def busy(served, e: QueueFull) -> ApiError:
    """The 503 for a model that admits nothing more, from this middleware or from a route."""
    return ApiError(503, f"model {served.name!r} is busy", f"more work is queued than it does in "
                    f"{served.batcher.max_queue_s:g} s; retry after {e.retry_after} s",
                    headers={"Retry-After": str(e.retry_after)})
