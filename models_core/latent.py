"""Latent-space maths: sampling, interpolation, sweeps and a PCA basis.

Pure tensor functions. Randomness enters only through an explicit torch.Generator, so a seed
reproduces the same latents on every run and device.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Interpolation = Literal["slerp", "lerp"]


def normal_rows(n: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, dim) draws from N(0, I), one row at a time, so that row i is the same whatever n is: torch.randn
    fills a tensor differently depending on its size (the last 16 values of a 100-wide row 0 differed
    between n=1 and n=16), and a seed must name the same face in a grid of 1 and of 16."""
    return torch.stack([torch.randn(dim, generator=generator) for _ in range(n)]) if n else torch.empty(0, dim)


def sample_prior(
    n: int, latent_dim: int, generator: torch.Generator | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """n draws from N(0, temperature² I), on the CPU so a seed means the same latents everywhere;
    the first k of n draws are the k draws of the same seed."""
    return temperature * normal_rows(n, latent_dim, generator)


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Straight line z0 -> z1; t broadcasts against z[..., :1]."""
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float | torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Great-circle interpolation (Shoemake 1985), batched over leading dims; t broadcasts
    against z[..., :1].

    A row whose vectors are (anti)parallel or zero has no unique great circle; that row, and only
    that row, falls back to lerp. (The seed's version switches the whole batch to lerp.)
    """
    t = torch.as_tensor(t, dtype=torch.float64, device=z0.device)
    a, b = z0.double(), z1.double()
    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cos = ((a / norm_a.clamp_min(1e-30)) * (b / norm_b.clamp_min(1e-30))).sum(-1, keepdim=True)
    omega = torch.acos(cos.clamp(-1, 1))
    sin_omega = torch.sin(omega)

    degenerate = (sin_omega.abs() < eps) | (norm_a < 1e-30) | (norm_b < 1e-30)
    safe_sin = torch.where(degenerate, torch.ones_like(sin_omega), sin_omega)
    w0 = torch.where(degenerate, 1 - t, torch.sin((1 - t) * omega) / safe_sin)
    w1 = torch.where(degenerate, t, torch.sin(t * omega) / safe_sin)
    return (w0 * a + w1 * b).to(z0.dtype)


def interpolation_path(
    z0: torch.Tensor, z1: torch.Tensor, steps: int, method: Interpolation = "slerp"
) -> torch.Tensor:
    """(B, D), (B, D) -> (B, steps, D): evenly spaced points from z0 to z1, both ends included."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if method not in ("slerp", "lerp"):
        raise ValueError(f"method must be 'slerp' or 'lerp', got {method!r}")
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device).view(1, steps, 1)
    interpolate = slerp if method == "slerp" else lerp
    return interpolate(z0.unsqueeze(1), z1.unsqueeze(1), t)


def check_indices(limit: int, what: str, **indices: int) -> None:
    """ValueError for the first of `indices` outside 0..limit-1; `what` names what they index."""
    for name, i in indices.items():
        if not 0 <= i < limit:
            raise ValueError(f"{name}={i} is beyond the {what} (0..{limit - 1})")


def latent_sweep(base: torch.Tensor, dim_x: int, dim_y: int, span: float = 3.0, steps: int = 10) -> torch.Tensor:
    """(D,) -> (steps, steps, D): `base` with dim_y swept down the rows and dim_x across the
    columns over [-span, span]; the seed's latent-space grid. The same dimension on both axes takes the
    sum of the two sweeps: it changes along the grid's diagonals."""
    d = base.shape[-1]
    check_indices(d, "latent", dim_x=dim_x, dim_y=dim_y)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    values = torch.linspace(-span, span, steps, dtype=base.dtype, device=base.device)
    grid = base.expand(steps, steps, d).clone()
    grid[:, :, dim_y] = values[:, None]
    grid[:, :, dim_x] = values[None, :] + (values[:, None] if dim_x == dim_y else 0)
    return grid


@dataclass(frozen=True)
class PcaBasis:
    """Principal directions of a set of latents (for AE/VAE: posterior means of held-out faces).

    components are unit rows (orthonormal when fitted here; GANSpace directions need not be),
    largest variance first; coordinates are measured in standard
    deviations along each component, so a grid over [-3, 3] spans the data's own spread.
    """

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (K, D)
    explained_variance: torch.Tensor  # (K,)
    explained_variance_ratio: torch.Tensor  # (K,)

    @classmethod
    def fit(cls, latents: torch.Tensor | np.ndarray, n_components: int | None = None) -> "PcaBasis":
        from sklearn.decomposition import PCA  # heavy import; only the trainer fits

        x = np.asarray(latents, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need a (N >= 2, D) array of latents, got shape {x.shape}")
        pca = PCA(n_components=n_components or min(x.shape), svd_solver="full").fit(x)
        return cls(
            mean=torch.from_numpy(pca.mean_).float(),
            components=torch.from_numpy(pca.components_).float(),
            explained_variance=torch.from_numpy(pca.explained_variance_).float(),
            explained_variance_ratio=torch.from_numpy(pca.explained_variance_ratio_).float(),
        )

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    @property
    def std(self) -> torch.Tensor:
        return self.explained_variance.clamp_min(0).sqrt()

    @property
    def dim_std(self) -> torch.Tensor:
        """(D,) standard deviation of each latent dimension under this Gaussian (its covariance's diagonal)."""
        return (self.explained_variance.clamp_min(0)[:, None] * self.components**2).sum(0).sqrt()

    def to_latent(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., k) coordinates in std units along the first k components -> (..., D) latents."""
        k = coords.shape[-1]
        if k > self.n_components:
            raise ValueError(f"{k} coordinates given but the basis has {self.n_components} components")
        return self.mean + (coords * self.std[:k]) @ self.components[:k]

    def sample(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """(n, D) draws from the Gaussian this basis describes (mean, components, variances)."""
        return self.to_latent(temperature * normal_rows(n, self.n_components, generator))

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """(..., D) latents -> (..., K) coordinates in std units (inverse of to_latent on the span)."""
        return ((z - self.mean) @ self.components.T) / self.std.clamp_min(1e-12)

    def grid(self, pc_x: int = 0, pc_y: int = 1, span: float = 3.0, steps: int = 10) -> torch.Tensor:
        """(steps, steps, D) latents sweeping pc_x across the columns and pc_y down the rows."""
        check_indices(self.n_components, "stored components", pc_x=pc_x, pc_y=pc_y)
        coords = latent_sweep(torch.zeros(self.n_components), pc_x, pc_y, span, steps)
        return self.to_latent(coords)

    def to_tensors(self, prefix: str = "pca.") -> dict[str, torch.Tensor]:
        return {
            f"{prefix}mean": self.mean.contiguous(),
            f"{prefix}components": self.components.contiguous(),
            f"{prefix}explained_variance": self.explained_variance.contiguous(),
            f"{prefix}explained_variance_ratio": self.explained_variance_ratio.contiguous(),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "pca.") -> "PcaBasis":
        missing = [f"{prefix}{f}" for f in cls.__dataclass_fields__ if f"{prefix}{f}" not in tensors]
        if missing:
            raise KeyError(f"PCA basis is missing tensors: {', '.join(missing)}")
        return cls(**{f: tensors[f"{prefix}{f}"].float() for f in cls.__dataclass_fields__})
