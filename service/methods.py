"""OPTIONS and 405 that tell the truth: `Allow` lists every method the path is documented with.

Starlette answers a wrong method with the methods of the first route on that path only (so
`OPTIONS /reconstruct` said `Allow: POST` though GET exists too) and has no OPTIONS of its own.
The documented operations are the OpenAPI schema's, so that is where the methods come from.
"""

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import send_error


class AllowedMethods:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            methods = documented_methods(scope["app"]).get(scope["path"])
            if methods is not None and scope["method"] == "OPTIONS":
                await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", ", ".join(methods).encode())]})
                return await send({"type": "http.response.body", "body": b""})
            if methods is not None and scope["method"] not in methods:
                allow = [(b"allow", ", ".join(methods).encode())]
                return await send_error(send, 405, f"{scope['method']} is not allowed on {scope['path']}",
                                        f"allowed: {', '.join(methods)}", allow)
        await self.app(scope, receive, send)


def documented_methods(app) -> dict[str, list[str]]:
    """Each path's methods in the app's OpenAPI schema, and OPTIONS (worked out once per app)."""
    if getattr(app.state, "methods", None) is None:
        paths = app.openapi()["paths"]
        app.state.methods = {path: sorted(m.upper() for m in ops) + ["OPTIONS"] for path, ops in paths.items()}
    return app.state.methods
