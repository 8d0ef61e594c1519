"""Models, health and metrics."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.dependencies import DrainingDep, FaceLatentsDep, MetricsDep, RegistryDep, SettingsDep
from service.routes.images import MAX_SAMPLE

router = APIRouter(tags=["service"])


@router.get("/models")
async def models(registry: RegistryDep, settings: SettingsDep, faces_in: FaceLatentsDep) -> dict:
    """Every served model: its versions, the one being served and that version's manifest."""
    out = []
    for name, served in sorted(registry.latest.items()):
        m = served.manifest
        out.append({
            "name": name, "kind": m.kind, "served_version": served.version,
            "versions": registry.store.versions(name),
            "has_encoder": served.has_encoder,
            "can_project": served.can_project,  # a GAN: faces reach its latents by optimisation (/project)
            "projects_from_encoder": served.encoder is not None,  # ... starting from its encoder's E(x)
            "pca_components": served.basis.n_components if served.basis is not None else 0,
            "latent_dim": served.latent_dim,
            "precision": served.precision.to_dict(),
            "manifest": {k: getattr(m, k) for k in ("config", "step", "epoch", "created_at", "data_fingerprint", "metrics", "weights_dtype")},
        })
    limits = {  # what a request may ask for, so that a client can say so before it asks
        "max_files": settings.max_files, "max_upload_bytes": settings.max_upload_bytes,
        "max_projection_faces": settings.max_projection_faces, "projection_time_s": settings.projection_time_s,
        "projection_steps": settings.projection_steps, "encoder_projection_steps": settings.encoder_projection_steps,
        "default_projection_s": faces_in.default_answer_s, "max_sample": MAX_SAMPLE}
    return {"models": out, "limits": limits}


@router.get("/healthz")
async def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(registry: RegistryDep, draining: DrainingDep) -> JSONResponse:
    """Ready when at least one model is loaded and the server is not shutting down."""
    served = {n: s.version for n, s in registry.latest.items()}
    status = "draining" if draining else "ready" if served else "no models loaded"
    return JSONResponse({"status": status, "models": served}, status_code=200 if status == "ready" else 503)


@router.get("/metrics", response_class=Response)
async def metrics(m: MetricsDep, registry: RegistryDep) -> Response:
    """Prometheus metrics: requests, latency, batch sizes, queue depth, served versions."""
    for name, served in registry.latest.items():
        m.queue_depth.labels(name).set(served.batcher.depth)
        m.served_version.labels(name).set(served.version)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
