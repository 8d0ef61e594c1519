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


class ClientWatch:
    """One request's side of the guard. Once the request body is read, the server's next message
    is the client's disconnect: a watcher task reads it then and cancels the request's task
    (uvicorn's own, under the deadline: one extra task per request, not three). Messages the
    watcher reads on the app's behalf are handed over when the app asks."""

    def __init__(self, receive: Receive, send: Send, task: asyncio.Task):
        self._receive, self._send, self.task = receive, send, task
        self.gone = asyncio.Event()
        self.held: list[Message] = []
        self.watcher: asyncio.Task | None = None
        self.started = False  # the response has begun
        self.deadline: asyncio.Timeout | None = None

    def start_watching(self) -> None:
        if self.watcher is None:
            self.watcher = asyncio.ensure_future(self.watch())

    async def watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                self.task.cancel()
                return
            self.held.append(message)

    async def receive(self) -> Message:
        """The app's receive."""
        if self.watcher is not None:  # the body is complete: hand over what the watcher holds, then wait
            if self.held:
                return self.held.pop(0)
            await self.gone.wait()
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone.set()
        elif not message.get("more_body", False):
            self.start_watching()
        return message

    async def send(self, message: Message) -> None:
        """The app's send."""
        if message["type"] == "http.response.start":
            self.started = True
            self.deadline.reschedule(None)  # answering already: let it finish
        await self._send(message)

    def close(self) -> None:
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()
        if self.gone.is_set():
            while self.task.cancelling():  # the watcher's cancel is spent; nothing after this may see it
                self.task.uncancel()


class RequestGuard:
    def __init__(self, app: ASGIApp, timeout: float):
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = ClientWatch(receive, send, asyncio.current_task())
        if not has_body(scope):
            client.start_watching()
        try:
            async with asyncio.timeout(self.timeout) as client.deadline:
                await self.app(scope, client.receive, client.send)
        except TimeoutError:
            if not client.deadline.expired():
                raise  # the app's own (a socket's ETIMEDOUT, say): the error handlers answer it
            if not client.started:
                try:
                    await self.timed_out(send)
                except asyncio.CancelledError:  # the client left while its 504 was going out
                    if not client.gone.is_set():
                        raise
        except asyncio.CancelledError:
            if not client.gone.is_set():
                raise  # not ours: the server is stopping
            scope.setdefault("state", {})["client_gone"] = True
        finally:
            client.close()

    async def timed_out(self, send: Send) -> None:
        await send_error(send, 504, "request timed out", f"not answered within the server's {self.timeout:g} s "
                         "deadline; retry later", [(b"retry-after", b"1")])
