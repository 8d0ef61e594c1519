"""PNG grid responses: deterministic bytes, ETag from the request's identity, an LRU of encoded PNGs."""

import hashlib
import json

import torch
from cachetools import LRUCache
from fastapi import Request, Response

from models_core.images import encode_png, image_grid

IMMUTABLE = "public, max-age=31536000, immutable"  # an explicit version never changes
REVALIDATE = "public, max-age=0, must-revalidate"  # "latest" may move on to a new version


class PngCache:
    """Encoded PNGs (with any headers that describe how they were made) by ETag, least recently
    used out first, bounded by their total bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items = LRUCache(maxsize=max(max_bytes, 1), getsizeof=lambda item: len(item[0]))

    @property
    def bytes(self) -> int:
        return int(self.items.currsize)

    def get(self, key: str) -> tuple[bytes, dict[str, str]] | None:
        return self.items.get(key)

    def put(self, key: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        if len(data) > self.max_bytes or key in self.items:
            return
        self.items[key] = data, dict(headers or {})


# Bumped whenever the served numerics change, so that an ETag never names other bytes than before.
# 2: BatchNorm folded into the convolutions, bf16 weights. 3: latents drawn row by row (same seed, same face).
NUMERICS = 3


def etag_for(endpoint: str, model: str, version: int, precision: str, params: dict) -> str:
    # The precision is part of what a response is: bf16 and fp32 decode to different bytes.
    identity = json.dumps([endpoint, model, version, precision, NUMERICS, sorted(params.items())], default=str)
    return '"' + hashlib.sha256(identity.encode()).hexdigest()[:32] + '"'


def identity_headers(model: str, version: int, precision: str, seed: int | None) -> dict[str, str]:
    headers = {"X-Model": model, "X-Model-Version": str(version), "X-Precision": precision}
    if seed is not None:
        headers["X-Seed"] = str(seed)
    return headers


def not_modified(request: Request, etag: str) -> bool:
    return etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]


def grid_png(images: torch.Tensor, nrow: int) -> bytes:
    return encode_png(image_grid(images, nrow=nrow))


def png_response(data: bytes, headers: dict[str, str]) -> Response:
    return Response(content=data, media_type="image/png", headers=headers)
