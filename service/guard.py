"""Every request ends: a server-side deadline, and work stopped for clients that have gone.

Starlette runs a handler to completion even when its client has disconnected, and nothing bounds
how long a handler may wait. This middleware runs each request as a task of its own and cancels
it when (a) the client disconnects, so its queued rows are dropped before they are decoded, or
(b) the deadline passes, answering a JSON 504 if no response has started.
"""

import asyncio
import contextlib
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import send_error


def has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


class RequestGuard:
    def __init__(self, app: ASGIApp, timeout: float):
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False
        gone = asyncio.Event()
        held: list[Message] = []  # what the watcher read on the app's behalf
        watcher: asyncio.Task | None = None

        async def watch() -> None:
            """Once the body is read, the server's next message is the client's disconnect."""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return
                held.append(message)

        def start_watching() -> None:
            nonlocal watcher
            if watcher is None:
                watcher = asyncio.ensure_future(watch())

        async def app_receive() -> Message:
            if watcher is not None:  # the body is complete: hand over what the watcher holds, then wait
                if held:
                    return held.pop(0)
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                start_watching()
            return message

        async def app_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        if not has_body(scope):
            start_watching()
        task = asyncio.ensure_future(self.app(scope, app_receive, app_send))
        client_gone = asyncio.ensure_future(gone.wait())
        try:
            done, _ = await asyncio.wait({task, client_gone}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
            if task not in done and not gone.is_set() and started:  # answering already: let it finish
                done, _ = await asyncio.wait({task, client_gone}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if gone.is_set():
                scope.setdefault("state", {})["client_gone"] = True
            elif not started:
                await self.timed_out(send)
        finally:
            for t in (task, client_gone, watcher):
                if t is not None and not t.done():
                    t.cancel()

    async def timed_out(self, send: Send) -> None:
        await send_error(send, 504, "request timed out", f"not answered within the server's {self.timeout:g} s "
                         "deadline; retry later", [(b"retry-after", b"1")])
