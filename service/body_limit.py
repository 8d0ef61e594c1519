"""Refuse request bodies over their route's limit before the multipart parser spools them to disk."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import send_error


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a declared Content-Length over the route's limit; a body that streams past it is
    cut off. `limits` maps (method, path) to bytes; every other route takes no body at all."""

    def __init__(self, app: ASGIApp, limits: dict[tuple[str, str], int]):
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.get((scope["method"], scope["path"]), 0)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self.reject(send, limit)

        seen = 0
        started = rejected = False

        async def limited_receive() -> Message:
            nonlocal seen, rejected
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not rejected:
                    # Answer now: FastAPI turns any error while parsing a body into its own 400.
                    rejected = True
                    if not started:
                        await self.reject(send, limit)
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # the app's answer to the aborted body is dropped; the 413 went out
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            pass

    async def reject(self, send: Send, limit: int) -> None:
        detail = f"this route takes at most {limit:,} bytes" if limit else "this route takes no request body"
        await send_error(send, 413, "request body too large", detail)
