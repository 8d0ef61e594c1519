"""Convolutional autoencoder and VAE for 64×64 faces (the seed's architecture).

Encoder: 4 × (conv k4 s2 p1, BatchNorm, ReLU), channels h, 2h, 4h, 8h, then flatten.
Decoder: linear -> (8h, 4, 4) -> 4 × transposed conv (k4 s2 p1) -> tanh.
The autoencoder baseline is the same pair of networks with one latent head and no KL.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from models_core.conv_transpose import CONV_IMPLS, ConvImpl, ConvTranspose2d
from models_core.small_map_conv import SmallMapConv2d

N_STAGES = 4  # 64 -> 32 -> 16 -> 8 -> 4


@dataclass(frozen=True)
class VAEConfig:
    """Shape of an autoencoder or VAE. The defaults are the seed's (27.0 M parameters as a VAE)."""

    latent_dim: int = 100
    hidden: int = 128  # channels of the first stage; doubled at each of the 4 stages
    img_size: int = 64
    img_channels: int = 3
    conv_impl: ConvImpl = "native"

    def __post_init__(self):
        if self.img_size % 2**N_STAGES:
            raise ValueError(f"img_size must be a multiple of {2**N_STAGES}, got {self.img_size}")
        if min(self.latent_dim, self.hidden, self.img_channels) < 1:
            raise ValueError("latent_dim, hidden and img_channels must be positive")
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {', '.join(CONV_IMPLS)}, got {self.conv_impl!r}")

    @property
    def bottom_size(self) -> int:
        return self.img_size // 2**N_STAGES

    @property
    def bottom_channels(self) -> int:
        return self.hidden * 2 ** (N_STAGES - 1)

    @property
    def flat_size(self) -> int:
        return self.bottom_channels * self.bottom_size**2

    def to_dict(self) -> dict:
        return asdict(self)


VAE_PRESETS = {
    "seed": VAEConfig(),
    # The seed's network at 3/4 width (14.9 M parameters as an AE, 30 MB in bf16): the bundled AE, because
    # the seed's AE (51 MB) would push the bundle past its 110 MB budget.
    "medium": VAEConfig(hidden=96),
    "small": VAEConfig(latent_dim=64, hidden=32),  # 2.2 M parameters as a VAE: CPU training in minutes
    "tiny": VAEConfig(latent_dim=8, hidden=4),  # for tests
}


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(SmallMapConv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU())


def up_block(c_in: int, c_out: int, impl: ConvImpl) -> nn.Sequential:
    return nn.Sequential(ConvTranspose2d(c_in, c_out, 4, 2, 1, impl=impl), nn.BatchNorm2d(c_out), nn.ReLU())


class ConvEncoder(nn.Module):
    """(B, C, S, S) -> (B, 8h · (S/16)²) features."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        channels = [cfg.img_channels] + [cfg.hidden * 2**i for i in range(N_STAGES)]
        self.net = nn.Sequential(
            *(conv_block(c_in, c_out) for c_in, c_out in zip(channels, channels[1:])),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """(B, latent_dim) -> (B, C, S, S) in [-1, 1]."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.project = nn.Linear(cfg.latent_dim, cfg.flat_size)
        channels = [cfg.hidden * 2**i for i in reversed(range(N_STAGES))]  # 8h, 4h, 2h, h
        self.net = nn.Sequential(
            *(up_block(c_in, c_out, cfg.conv_impl) for c_in, c_out in zip(channels, channels[1:])),
            ConvTranspose2d(cfg.hidden, cfg.img_channels, 4, 2, 1, impl=cfg.conv_impl),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = self.cfg.bottom_size
        h = self.project(z).view(-1, self.cfg.bottom_channels, s, s)  # (B, 8h, 4, 4)
        return self.net(h)  # (B, 3, 64, 64)


class Autoencoder(nn.Module):
    """Deterministic autoencoder: the VAE's networks with a single latent head and no KL."""

    def __init__(self, cfg: VAEConfig = VAEConfig()):
        super().__init__()
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.encoder = ConvEncoder(cfg)
        self.fc_z = nn.Linear(cfg.flat_size, cfg.latent_dim)
        self.decoder = ConvDecoder(cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_z(self.encoder(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic latent of an image batch (what PCA and interpolation use)."""
        return self.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class VAE(nn.Module):
    """Kingma & Welling 2014 with a Gaussian encoder q(z|x) = N(mu, diag(exp(logvar)))."""

    def __init__(self, cfg: VAEConfig = VAEConfig()):
        super().__init__()
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.encoder = ConvEncoder(cfg)
        self.fc_mu = nn.Linear(cfg.flat_size, cfg.latent_dim)
        self.fc_logvar = nn.Linear(cfg.flat_size, cfg.latent_dim)
        # log σ² starts at 0 for every face, where the KL's pull on it is zero: from PyTorch's default
        # init it spanned ±1.6, and with Adam's first steps (see trainer/config.py) that became ±30.
        nn.init.zeros_(self.fc_logvar.weight)
        nn.init.zeros_(self.fc_logvar.bias)
        self.decoder = ConvDecoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the deterministic latent of an image batch."""
        return self.encode(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None):
        # z = mu + sigma * eps keeps the sample differentiable in mu and sigma.
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar
