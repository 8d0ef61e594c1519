"""The study's figures from a checkpoint root, built from the same latents and decoders the service
serves (models_core.views): per model its samples, reconstructions of held-out faces (a GAN's by
projection), lerp vs slerp paths, a PCA grid, a latent-dimension grid and attribute edits (where
the version has directions); across models the study's AE-vs-VAE latent grid. Fixed seeds: reruns
write the same images."""

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from models_core import views
from models_core.checkpoint import Checkpoint
from models_core.folding import serving_copy
from models_core.images import decode_images, encode_png, image_grid, originals_over_reconstructions, side_by_side, to_uint8
from models_core.precision import Precision
from models_core.projection import DEFAULT_STEPS, DEFAULT_STEPS_FROM_ENCODER, ProjectionConfig, project

PAIRS = 4  # lerp-vs-slerp: seed pairs, each a lerp row above a slerp row
STEPS = 8  # images along a path
GRID = 7  # side of the PCA and latent grids
SPAN = 3.0
EDITED = ("Smiling", "Male", "Blond_Hair", "Eyeglasses", "Young")  # the attribute figure's rows, where published
EDIT_FACES = 3  # faces per attribute, a row each, as /edit?attribute=A&n=3&steps=5 shows them


class Renderer:
    """Decodes (and encodes or projects) one checkpoint in the chosen precision, as the service does."""

    def __init__(self, ckpt: Checkpoint, device: torch.device, precision: Precision):
        self.ckpt, self.device, self.autocast = ckpt, device, precision.autocast(device)
        self.net = serving_copy(ckpt.model.to(device), precision.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode_images(self.net.decode, z, self.device, self.autocast)

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, D) float latents of (B, C, H, W) faces in [-1, 1] through the encoder (AE/VAE)."""
        with torch.inference_mode(), self.autocast():
            return self.net.embed(faces.to(self.device)).float().cpu()

    def reconstruct(self, faces: torch.Tensor, projection_steps: int | None = None) -> torch.Tensor:
        """AE/VAE: through the encoder. GAN: by projection, from E(x) where the version has an encoder (as
        the service does), else from random starts."""
        if self.ckpt.kind.has_encoder:
            return self.decode(self.embed(faces))
        d, e, faces = self.ckpt.discriminator, self.ckpt.encoder, faces.to(self.device)
        start = None
        if e is not None:
            with torch.inference_mode(), self.autocast():
                start = e.to(self.device)(faces).float().clone()
        if projection_steps is None:  # the service's default
            projection_steps = DEFAULT_STEPS_FROM_ENCODER if start is not None else DEFAULT_STEPS
        _, images, _ = project(self.net, faces, ProjectionConfig(steps=projection_steps),
                               d.to(self.device) if d is not None else None, self.autocast, start)
        return to_uint8(images.cpu())


def model_figures(r: Renderer, faces: torch.Tensor, projection_steps: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(figure name, image) for one model."""
    ckpt = r.ckpt
    yield "samples", image_grid(r.decode(views.prior_latents(ckpt, 32, seed=0)), nrow=8)
    n = 16 if ckpt.kind.has_encoder else 8  # a projection takes seconds per face
    images, width = originals_over_reconstructions(faces[:n], r.reconstruct(faces[:n], projection_steps))
    yield "reconstructions", image_grid(images, nrow=width)
    rows = [views.interpolation_latents(ckpt, 2 * i + 1, 2 * i + 2, STEPS, method) for i in range(PAIRS)
            for method in ("lerp", "slerp")]
    yield "lerp_vs_slerp", image_grid(r.decode(torch.cat(rows)), nrow=STEPS)
    if ckpt.pca is not None:
        yield "pca", image_grid(r.decode(views.pca_grid_latents(ckpt, ckpt.pca, 0, 1, SPAN, GRID)), nrow=GRID)
    yield "latent_grid", image_grid(r.decode(views.latent_grid_latents(ckpt, 0, 1, SPAN, GRID)), nrow=GRID)
    edited = [a for a in EDITED if a in ckpt.attributes]
    if edited:
        z = torch.cat([views.edit_latents(ckpt, a, seed=0, n=EDIT_FACES, steps=5, span=SPAN) for a in edited])
        yield "attributes", image_grid(r.decode(z), nrow=5)


def study_latent_grid(r: Renderer) -> np.ndarray:
    """The study's grid: two raw latent dimensions swept ±3 around z = 0."""
    z = views.latent_grid_latents(r.ckpt, 0, 1, SPAN, GRID, centre="zero", units="absolute")
    return image_grid(r.decode(z), nrow=GRID)


def write_figures(renderers: dict[str, Renderer], faces: torch.Tensor, out: Path, projection_steps: int | None = None,
                  progress=lambda message: None) -> list[Path]:
    """Every figure for every model, and the AE-vs-VAE comparison where both are there, as PNGs in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(name: str, image: np.ndarray) -> None:
        path = out / f"{name}.png"
        path.write_bytes(encode_png(image))
        written.append(path)
        progress(f"{path}  {image.shape[1]}×{image.shape[0]}")

    for name, r in renderers.items():
        for figure, image in model_figures(r, faces, projection_steps):
            save(f"{name}_{figure}", image)
    if "ae" in renderers and "vae" in renderers:
        save("ae_vs_vae_latent_grid", side_by_side(study_latent_grid(renderers["ae"]), study_latent_grid(renderers["vae"]), gap=24))
    return written
