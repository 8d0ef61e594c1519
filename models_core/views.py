"""The latents behind each view of a model: a sample grid, interpolation paths, PCA and latent grids,
attribute edits.

The service's endpoints and the figures command build their latents here, so a figure made
offline is the image the API returns for the same parameters. Every function is deterministic in
its seed and returns (N, D) latents, one row per image, in reading order.
"""

import torch

from models_core.attributes import edit_offsets
from models_core.checkpoint import Checkpoint
from models_core.latent import PcaBasis, interpolation_path, latent_sweep


def prior_latents(ckpt: Checkpoint, n: int, seed: int, temperature: float = 1.0, prior: str = "auto") -> torch.Tensor:
    """n latents of the model's samples (ValueError where `prior` is unavailable for the model)."""
    return ckpt.sample_latents(n, torch.Generator().manual_seed(seed), temperature, prior)


def centre_latent(ckpt: Checkpoint, centre: str, seed: int) -> torch.Tensor:
    """(D,) the latent a sweep is centred on: the sample of `seed`, the prior's mean, or zero."""
    if centre == "sample":
        return prior_latents(ckpt, 1, seed)[0]
    if centre == "mean":
        return ckpt.prior_moments()[0]
    if centre == "zero":
        return torch.zeros(ckpt.model.latent_dim)
    raise ValueError(f"unknown centre {centre!r}; use sample, mean or zero")


def interpolation_latents(ckpt: Checkpoint, seed_a: int, seed_b: int, steps: int, method: str, rows: int = 1) -> torch.Tensor:
    """rows paths of `steps` latents between samples drawn from seed_a and seed_b."""
    z0, z1 = prior_latents(ckpt, rows, seed_a), prior_latents(ckpt, rows, seed_b)
    return interpolation_path(z0, z1, steps, method).reshape(rows * steps, -1)


def pca_grid_latents(ckpt: Checkpoint, basis: PcaBasis, pc_x: int, pc_y: int, span: float, steps: int,
                     centre: str = "sample", seed: int = 0) -> torch.Tensor:
    """steps × steps latents sweeping two principal directions around the centre."""
    grid = basis.grid(pc_x, pc_y, span, steps).reshape(steps * steps, -1)
    return grid - basis.mean + centre_latent(ckpt, centre, seed)


def pca_point_latent(ckpt: Checkpoint, basis: PcaBasis, coords: list[float], centre: str = "sample", seed: int = 0) -> torch.Tensor:
    """(1, D): the centre moved by `coords` standard deviations along the first principal directions."""
    return basis.to_latent(torch.tensor([coords])) - basis.mean + centre_latent(ckpt, centre, seed)


def latent_grid_latents(ckpt: Checkpoint, dim_x: int, dim_y: int, span: float, steps: int, centre: str = "sample",
                        seed: int = 0, units: str = "std") -> torch.Tensor:
    """steps × steps latents sweeping two raw latent dimensions around the centre, the others held there.
    units=std: span counts standard deviations of each dimension under the model's prior; absolute: raw units."""
    d = ckpt.model.latent_dim
    offsets = latent_sweep(torch.zeros(d), dim_x, dim_y, span, steps).reshape(steps * steps, d)
    scale = ckpt.prior_moments()[1] if units == "std" else 1.0
    return centre_latent(ckpt, centre, seed) + offsets * scale


def edit_latents(ckpt: Checkpoint, attribute: str, seed: int, n: int, steps: int, span: float,
                 hold: list[str] = ()) -> torch.Tensor:
    """n rows of `steps` latents: the samples of `seed` (as prior_latents gives them) moved from -span to
    +span scales along the attribute's direction, `hold`'s directions projected out (KeyError for an
    unknown attribute, ValueError where holding leaves no direction)."""
    z = prior_latents(ckpt, n, seed)
    return ckpt.attributes.edit(z, attribute, edit_offsets(span, steps), hold).reshape(n * steps, -1)
