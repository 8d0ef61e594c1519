"""What the routes take from the running application, as FastAPI dependencies."""

from typing import Annotated

import torch
from fastapi import Depends, Request

from service.face_latents import FaceLatents
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry
from service.responses import PngCache
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_png_cache(request: Request) -> PngCache:
    return request.app.state.cache


def get_face_latents(request: Request) -> FaceLatents:
    return request.app.state.face_latents


def get_bundled_faces(request: Request) -> torch.Tensor:
    """Held-out faces shipped with the service (models_core.images.held_out_faces)."""
    return request.app.state.faces


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def is_draining(request: Request) -> bool:
    """Set at SIGTERM (python -m service): the server still answers but takes no new traffic."""
    return request.app.state.draining


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
PngCacheDep = Annotated[PngCache, Depends(get_png_cache)]
FaceLatentsDep = Annotated[FaceLatents, Depends(get_face_latents)]
BundledFacesDep = Annotated[torch.Tensor, Depends(get_bundled_faces)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
DrainingDep = Annotated[bool, Depends(is_draining)]
