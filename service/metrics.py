"""Prometheus metrics, in a registry of the app's own (so several apps can live in one process)."""

import re
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("facegen_requests", "HTTP requests", ["endpoint", "model", "status"], registry=self.registry)
        self.latency = Histogram("facegen_request_seconds", "request latency", ["endpoint", "model"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("facegen_batch_rows", "latents decoded per forward pass", ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batches = Counter("facegen_batches", "forward passes", ["model"], registry=self.registry)
        self.rows_decoded = Counter("facegen_rows_decoded", "latents decoded", ["model"], registry=self.registry)
        self.rows_dropped = Counter("facegen_rows_dropped", "latents dropped undecoded: their request was gone "
                                    "(client disconnected or deadline passed)", ["model"], registry=self.registry)
        self.projection_steps = Counter("facegen_projection_steps", "optimisation steps run by GAN projections",
                                        ["model"], registry=self.registry)
        self.projections = Counter("facegen_projections", "GAN projections ended, by outcome: done, timed_out "
                                   "(stopped at the time limit with the best latents so far) or cancelled (the request "
                                   "was gone)", ["model", "outcome"], registry=self.registry)
        self.queue_depth = Gauge("facegen_queue_depth", "requests waiting per model", ["model"], registry=self.registry)
        self.request_series: dict[tuple[str, str, int], tuple] = {}
        self.served_version = Gauge("facegen_served_version", "version being served", ["model"], registry=self.registry)

    def observe_request(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        key = endpoint, model, status
        if key not in self.request_series:  # labels() costs more than the counting; every request counts
            self.request_series[key] = self.requests.labels(endpoint, model, str(status)), self.latency.labels(endpoint, model)
        count, latency = self.request_series[key]
        count.inc()
        latency.observe(seconds)

    def observe_batch(self, model: str, rows: int) -> None:
        self.batch_rows.labels(model).observe(rows)
        self.batches.labels(model).inc()
        self.rows_decoded.labels(model).inc(rows)

    def observe_drop(self, model: str, rows: int) -> None:
        self.rows_dropped.labels(model).inc(rows)

    def observe_projection_steps(self, model: str, steps: int) -> None:
        self.projection_steps.labels(model).inc(steps)

    def observe_projection_end(self, model: str, outcome: str) -> None:
        self.projections.labels(model, outcome).inc()


REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def echoed_request_id(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The X-Request-ID header to answer with: the client's, when it is well formed."""
    request_id = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
    return [(b"x-request-id", request_id)] if request_id is not None and REQUEST_ID.fullmatch(request_id) else []


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route template, model and status, and echoes a
    client's X-Request-ID (up to 64 of [A-Za-z0-9._:-]) so it can match answers to requests.

    Plain ASGI rather than @app.middleware("http"): that wrapper costs about a millisecond of CPU
    per request, which on a small CPU box is a tenth of a one-face /sample.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), None
        request_id = echoed_request_id(scope)

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *request_id]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            state = scope.get("state", {})
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            model = state.get("model", "")  # set by the routes via request.state
            if status is None:  # nothing was sent: the client went away (nginx's 499), or the app failed
                status = 499 if state.get("client_gone") else 500
            self.metrics.observe_request(endpoint, model, status, time.perf_counter() - start)
