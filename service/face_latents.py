"""From faces to a model's latents: uploads read within the service's limits, then encoded (AE,
VAE) or projected (GAN), with the API's errors for what a model cannot do."""

import asyncio
from dataclasses import dataclass
from typing import ClassVar

import torch
from fastapi import UploadFile

from models_core.images import ImageDecodeError, UnsupportedImage, decode_image
from service.errors import ApiError
from service.projection import Projected, Projector, ProjectorBusy
from service.registry import ServedModel
from service.settings import Settings
from service.workers import InferencePool

DEFAULT_ANSWER_S = 6.0


@dataclass
class FaceLatents:
    settings: Settings
    workers: InferencePool
    projector: Projector
    # A GAN projection whose steps are left out (no encoder) stops here, so that defaults answer
    # within 10 s on 2 CPU cores; more steps are for asking.
    default_answer_s: ClassVar[float] = DEFAULT_ANSWER_S

    def require(self, served: ServedModel, n_faces: int = 1) -> None:
        """409 unless `served` can map faces to latents: an encoder, or a GAN's projection (for few enough faces)."""
        if served.has_encoder:
            return
        if not served.can_project:
            raise ApiError(409, f"model {served.name!r} ({served.manifest.kind}) cannot take faces",
                           "it has no encoder and is not a GAN; use an ae, vae or gan model")
        limit = self.settings.max_projection_faces
        if n_faces > limit:
            raise ApiError(409, f"{n_faces} faces to project into {served.name!r}", f"a GAN projects at most "
                           f"{limit} faces per request (FACEGEN_MAX_PROJECTION_FACES): each takes seconds")

    async def read(self, files: list[UploadFile], size: int) -> torch.Tensor:
        """Uploaded images as (B, C, size, size) faces in [-1, 1]: 413, 415 or 422 for what cannot be one."""
        s = self.settings
        if not 1 <= len(files) <= s.max_files:
            raise ApiError(422, f"{len(files)} files uploaded", f"send 1 to {s.max_files} images")
        faces = []
        for f in files:
            data = await f.read(s.max_upload_bytes + 1)
            if len(data) > s.max_upload_bytes:
                raise ApiError(413, f"{f.filename!r} is too large", f"the limit is {s.max_upload_bytes:,} bytes per image")
            try:
                faces.append(await asyncio.to_thread(decode_image, data, size, s.max_upload_bytes, s.max_upload_pixels))
            except ImageDecodeError as e:
                status = 415 if isinstance(e, UnsupportedImage) else 422
                raise ApiError(status, f"{f.filename!r}: {e}", "upload PNG, JPEG or WebP face images") from None
        return torch.stack(faces)

    async def embed(self, served: ServedModel, faces: torch.Tensor) -> torch.Tensor:
        """Encode on an inference thread; the faces count against the model's admission budget like rows to decode."""
        with served.admit(len(faces)):
            return await self.workers.run(served.embed, faces)

    def answer_budget_s(self, served: ServedModel, steps: int | None) -> float | None:
        """The time budget of a GAN projection whose steps are left out and that has no encoder's start
        (default_answer_s); None for any other."""
        return self.default_answer_s if steps is None and served.encoder is None else None

    def steps_to_run(self, served: ServedModel, steps: int | None) -> int:
        """The steps a projection runs: those asked for, else the default; 0 only from an encoder's start."""
        if steps == 0 and served.encoder is None:
            raise ApiError(409, f"{served.name} v{served.version} has no encoder to start a projection from",
                           "ask for 1 or more steps, or use a version published with an encoder")
        if steps is not None:
            return steps
        return self.settings.encoder_projection_steps if served.encoder is not None else self.settings.projection_steps

    async def project(self, served: ServedModel, faces: torch.Tensor, steps: int | None,
                      time_limit_s: float | None = None) -> Projected:
        if time_limit_s is None:
            time_limit_s = self.answer_budget_s(served, steps)
        steps = self.steps_to_run(served, steps)
        try:
            return await self.projector.project(served, faces, steps, time_limit_s)
        except ProjectorBusy as e:
            raise ApiError(503, "every projection slot is taken", f"{self.projector.max_running} projections "
                           f"run at once (FACEGEN_MAX_PROJECTIONS); retry after {e.retry_after} s",
                           headers={"Retry-After": str(e.retry_after)}) from None

    async def latents(self, served: ServedModel, faces: torch.Tensor,
                      steps: int | None) -> tuple[torch.Tensor, dict[str, str]]:
        """The faces' latents: the encoder's means, or a GAN's projection (whose quality goes in headers)."""
        if served.has_encoder:
            return await self.embed(served, faces), {}
        projected = await self.project(served, faces, steps)
        return projected.z, projected.headers()

    async def reconstruct(self, served: ServedModel, faces: torch.Tensor, steps: int | None,
                          time_limit_s: float | None = None) -> tuple[torch.Tensor, dict[str, str]]:
        """uint8 decodings of the faces' latents, and headers describing them."""
        if served.has_encoder:
            return await served.decode(await self.embed(served, faces)), {}
        projected = await self.project(served, faces, steps, time_limit_s)  # it has decoded G(z*) already
        return projected.images, projected.headers()
