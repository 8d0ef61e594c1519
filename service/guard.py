"""Every request ends: a server-side deadline, and work stopped for clients that have gone.

Starlette runs a handler to completion even when its client has disconnected, and nothing bounds
how long a handler may wait. This middleware runs each request as a task of its own and cancels
it when (a) the client disconnects, so its queued rows are dropped before they are decoded, or
(b) the deadline passes, answering a JSON 504 if no response has started.
"""

import asyncio
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
        # The request runs in the task uvicorn gave it, under a deadline on that task; the watcher
        # cancels the same task when the client goes. One extra task per request, not three.
        task = asyncio.current_task()
        gone = asyncio.Event()
        held: list[Message] = []  # what the watcher read on the app's behalf
        watcher: asyncio.Task | None = None
        started = False

        async def watch() -> None:
            """Once the body is read, the server's next message is the client's disconnect."""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    task.cancel()
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
            if message["type"] == "http.response.start":
                started = True
                deadline.reschedule(None)  # answering already: let it finish
            await send(message)

        if not has_body(scope):
            start_watching()
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self.app(scope, app_receive, app_send)
        except TimeoutError:
            if not deadline.expired():
                raise  # the app's own (a socket's ETIMEDOUT, say): the error handlers answer it
            if not started:
                try:
                    await self.timed_out(send)
                except asyncio.CancelledError:  # the client left while its 504 was going out
                    if not gone.is_set():
                        raise
        except asyncio.CancelledError:
            if not gone.is_set():
                raise  # not ours: the server is stopping
            scope.setdefault("state", {})["client_gone"] = True
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
            if gone.is_set():
                while task.cancelling():  # the watcher's cancel is spent; nothing after this may see it
                    task.uncancel()

    async def timed_out(self, send: Send) -> None:
        await send_error(send, 504, "request timed out", f"not answered within the server's {self.timeout:g} s "
                         "deadline; retry later", [(b"retry-after", b"1")])
