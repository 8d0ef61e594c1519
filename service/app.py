"""create_app(): the FastAPI application. Models load in the lifespan, never at import time."""

import asyncio
import contextlib
import gc
import logging
from importlib import resources

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from models_core.images import held_out_faces
from service.admission import Admission, decoding_routes
from service.body_limit import BodyLimitMiddleware
from service.docs_pages import install_offline_docs
from service.errors import error_responses, install_error_handlers, one_value_per_parameter
from service.face_latents import FaceLatents
from service.guard import RequestGuard
from service.methods import AllowedMethods
from service.metrics import RequestMetricsMiddleware, ServiceMetrics
from service.priority import lower_this_thread
from service.projection import Projector
from service.registry import ModelRegistry
from service.responses import PngCache
from service.routes import attributes, images, meta
from service.settings import Settings

log = logging.getLogger("facegen.service")

DESCRIPTION = """Sample, reconstruct, interpolate and explore faces from autoencoder, VAE and DCGAN
models. Image endpoints return PNG grids; the same request against the same version returns the
same bytes. Errors are JSON: `{"error": ..., "detail": ...}` (with `problems` for invalid parameters).
A 503 carries Retry-After. A model that cannot do what is asked (no encoder, no PCA basis, fewer
latent dimensions than asked) answers 409; /models says what each model has."""


MULTIPART_FRAMING = 64 * 1024  # boundaries and part headers around the files themselves


def body_limits(settings: Settings) -> dict[tuple[str, str], int]:
    """What each upload route can legitimately receive: its files at their largest, plus framing."""
    upload = settings.max_upload_bytes
    return {("POST", "/reconstruct"): settings.max_files * upload + MULTIPART_FRAMING,
            ("POST", "/interpolate"): 2 * upload + MULTIPART_FRAMING,
            ("POST", "/project"): settings.max_projection_faces * upload + MULTIPART_FRAMING,
            ("POST", "/edit"): settings.max_files * upload + MULTIPART_FRAMING}


class Service(FastAPI):
    """FastAPI behind Admission: a request for a saturated model is refused before FastAPI's own
    layers and the middleware stack see it."""

    def __init__(self, shed_pace: float, shed_rate: float, **kwargs):
        super().__init__(**kwargs)
        self.admission = Admission(super().__call__, self, shed_pace, shed_rate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.admission(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if not gc.get_freeze_count():
            # What the imports and the app built lives as long as the process (~400k objects): left to
            # the collector, each full pass walks it all, ~0.2 s with the event loop and the decoder
            # (which needs the GIL between its kernels) stopped. Models load after this: versions
            # retired later stay collectable.
            gc.collect()
            gc.freeze()
        registry = ModelRegistry(settings, on_batch=metrics.observe_batch, on_drop=metrics.observe_drop)
        app.state.registry = registry
        app.state.projector = Projector(registry.workers.run, settings.max_projections, settings.projection_time_s,
                                        on_steps=metrics.observe_projection_steps, on_end=metrics.observe_projection_end)
        app.state.face_latents = FaceLatents(settings, registry.workers, app.state.projector)
        await registry.refresh()
        registry.workers.start()  # its threads start at the loop's priority, before any change to it
        if lower_this_thread(settings.loop_nice):
            log.info("event loop at nice +%d: decoding comes first under load", settings.loop_nice)
        if not registry.latest:
            log.warning("no models found under %s; /readyz stays 503 until one is published", settings.checkpoint_root)
        poller = asyncio.get_running_loop().create_task(registry.poll())
        yield
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await registry.close()

    app = Service(settings.shed_pace_ms / 1000, settings.shed_rate, title="facegen", description=DESCRIPTION,
                  version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  dependencies=[Depends(one_value_per_parameter)],
                  responses=error_responses(413, 504))  # any route: a body where none is taken, the deadline
    app.state.settings, app.state.metrics = settings, metrics
    app.state.draining = False  # set on SIGTERM (python -m service): /readyz answers 503 from then on
    app.state.cache = PngCache(int(settings.cache_mb * 2**20))
    app.state.faces = held_out_faces()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limits=body_limits(settings))
    app.add_middleware(RequestGuard, timeout=settings.request_timeout_s)
    app.add_middleware(AllowedMethods)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: sees the 413s and 504s too
    routers = [images.router, attributes.router, meta.router]
    for router in routers:
        app.include_router(router)
    app.admission.decoding = decoding_routes(routers)
    install_offline_docs(app)
    if settings.study_dir.is_dir():
        app.mount("/study", StaticFiles(directory=settings.study_dir), name="study")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(resources.files("service").joinpath("static/index.html").read_text())

    return app
