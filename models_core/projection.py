"""GAN projection: find the latent z* whose generated face G(z*) is closest to a given face.

Adam on z from several random starts per face; after a short exploration only the best start of
each face goes on. Given a starting point (a GAN encoder's E(x)), it starts there alone and
refines; with 0 steps the answer is the starting point itself. The loss is the pixel error plus, from
random starts where the version ships its discriminator, a perceptual distance on D's features
(unit-normalised per position over channels, as in LPIPS), plus a term keeping |z| near √D, where
almost all of N(0, I)'s mass lies: far from that shell G was never trained and its faces fall apart.

A Projection advances in chunks (`advance(n)`), so that a server can interleave it with other
work on one thread and stop it when its client has gone.
"""

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models_core.images import psnr


DEFAULT_STEPS = 200  # from random starts
DEFAULT_STEPS_FROM_ENCODER = 50  # from E(x), already close
# From E(x) the refinement is on pixels alone by default. E was trained with D's features, so its start
# carries them, and D's backward pass doubles a step's cost: on GAN v6 (2 AMX cores), 50 pixel steps
# reached 20.4 dB at 0.20 s/face where 20 steps with D's features reached 18.8 at 0.30 (MODEL_CARD).
PERCEPTUAL_FROM_RANDOM, PERCEPTUAL_FROM_ENCODER = 1.0, 0.0


@dataclass(frozen=True)
class ProjectionConfig:
    steps: int = 200  # Adam steps in all, exploration included
    starts: int = 4  # random starts per face
    explore: int = 30  # steps every start runs before the best of each face is kept
    lr: float = 0.05
    perceptual: float | None = None  # weight of D's feature distance (with a discriminator); None: by the start, above
    prior: float = 0.05  # weight of (|z| / √D - 1)²
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0 or self.starts < 1 or self.explore < 0:
            raise ValueError("steps must be non-negative, starts positive, explore non-negative")


def feature_distance(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
    """(B,) sum over layers of the mean squared distance of channel-normalised features."""
    total = 0
    for a, b in zip(fa, fb):
        a, b = F.normalize(a.float(), dim=1, eps=1e-8), F.normalize(b.float(), dim=1, eps=1e-8)
        total = total + (a - b).pow(2).sum(1).flatten(1).mean(1)
    return total


class Projection:
    """The optimisation of latents for a batch of faces (B, C, H, W) in [-1, 1]."""

    def __init__(self, generator: nn.Module, faces: torch.Tensor, cfg: ProjectionConfig = ProjectionConfig(),
                 discriminator: nn.Module | None = None, autocast=contextlib.nullcontext, start: torch.Tensor | None = None):
        device = next(generator.parameters()).device
        if start is not None:  # one start per face, where the encoder put it
            cfg = dataclasses.replace(cfg, starts=1)
        if cfg.perceptual is None:
            cfg = dataclasses.replace(cfg, perceptual=PERCEPTUAL_FROM_RANDOM if start is None else PERCEPTUAL_FROM_ENCODER)
        self.G, self.D, self.cfg, self.autocast = generator, discriminator, cfg, autocast
        self.faces = faces.to(device)
        self.batch = len(faces)
        d = generator.latent_dim
        z = start.float() if start is not None else torch.randn(
            self.batch * cfg.starts, d, generator=torch.Generator().manual_seed(cfg.seed))
        self.target = self.faces.repeat_interleave(cfg.starts, 0)  # row b * starts + s: face b, start s
        self.target_features = self._features(self.target)
        self._optimise(z.to(device))
        self.done = 0
        self.losses = torch.full((len(z),), math.inf)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        if self.D is None or self.cfg.perceptual == 0:
            return None
        with torch.no_grad(), self.autocast():
            return [f.detach() for f in self.D.features(x)]

    def _optimise(self, z: torch.Tensor) -> None:
        self.z = z.detach().clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.z], lr=self.cfg.lr)

    @property
    def finished(self) -> bool:
        return self.done >= self.cfg.steps

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        """(rows,) the objective of each row."""
        with self.autocast():
            image = self.G.decode(z)
            perceptual = 0
            if self.target_features is not None:
                perceptual = self.cfg.perceptual * feature_distance(self.D.features(image), self.target_features)
        pixel = (image.float() - self.target).pow(2).flatten(1).mean(1)
        shell = (z.norm(dim=1) / math.sqrt(z.shape[1]) - 1).pow(2)
        return pixel + perceptual + self.cfg.prior * shell

    def advance(self, n: int) -> None:
        """Run up to n more steps."""
        for _ in range(min(n, self.cfg.steps - self.done)):
            losses = self.loss(self.z)
            self.opt.zero_grad(set_to_none=True)
            losses.sum().backward(inputs=[self.z])  # rows are independent (G in eval mode); no weight gradients
            self.opt.step()
            self.losses = losses.detach().float().cpu()
            self.done += 1
            if self.done == self.cfg.explore and self.cfg.starts > 1:
                self._keep_best_starts()

    def _best_rows(self) -> torch.Tensor:
        """(B,) the row of each face's start with the lowest last loss."""
        best = self.losses.view(self.batch, self.cfg.starts).argmin(1) + torch.arange(self.batch) * self.cfg.starts
        return best.to(self.z.device)

    def _keep_best_starts(self) -> None:
        best = self._best_rows()
        self.target = self.target[best]
        if self.target_features is not None:
            self.target_features = [f[best] for f in self.target_features]
        self._optimise(self.z[best])
        self.losses = self.losses[best.cpu()]

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z (B, D), G(z) (B, C, H, W) in [-1, 1], PSNR (B,)) for the best start of each face so far."""
        z = self.z.detach()
        if len(z) != self.batch:  # still exploring: the best start of each face so far
            z = z[self._best_rows()]
        with torch.no_grad(), self.autocast():
            images = self.G.decode(z).float()
        return z, images, psnr(images, self.faces)


def project(generator: nn.Module, faces: torch.Tensor, cfg: ProjectionConfig = ProjectionConfig(),
            discriminator: nn.Module | None = None, autocast=contextlib.nullcontext, start: torch.Tensor | None = None):
    """(z*, G(z*), PSNR) in one call; see Projection."""
    p = Projection(generator, faces, cfg, discriminator, autocast, start)
    p.advance(cfg.steps)
    return p.result()
