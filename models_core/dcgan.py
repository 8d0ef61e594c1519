"""DCGAN generator and discriminator for 64×64 faces (Radford et al. 2016, the seed's variant).

Generator: linear projection of z to (4h, 8, 8), BatchNorm, ReLU, then transposed convs
(k4 s2 p1) 8 -> 16 -> 32 -> 64 with BatchNorm + ReLU between and tanh at the end.
Discriminator: strided convs (k4 s2 p1) with LeakyReLU(0.2), BatchNorm on all but the first,
then a linear layer to one logit. It returns logits, not probabilities: the losses apply the
sigmoid inside BCE-with-logits, which stays finite where log(sigmoid(x)) would underflow.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from models_core.conv_transpose import CONV_IMPLS, ConvImpl, ConvTranspose2d


@dataclass(frozen=True)
class DCGANConfig:
    """Shape of a DCGAN pair. The defaults are the seed's (G 5.9 M, D 2.7 M parameters)."""

    latent_dim: int = 100
    hidden: tuple[int, ...] = (128, 256, 512)  # discriminator order; the generator runs it reversed
    img_size: int = 64
    img_channels: int = 3
    conv_impl: ConvImpl = "native"

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(c) for c in self.hidden))  # JSON gives lists
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive ints, got {self.hidden}")
        if self.img_size % 2 ** len(self.hidden):
            raise ValueError(f"img_size must be a multiple of {2 ** len(self.hidden)}, got {self.img_size}")
        if min(self.latent_dim, self.img_channels) < 1:
            raise ValueError("latent_dim and img_channels must be positive")
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {', '.join(CONV_IMPLS)}, got {self.conv_impl!r}")

    @property
    def bottom_size(self) -> int:
        return self.img_size // 2 ** len(self.hidden)

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


DCGAN_PRESETS = {
    "seed": DCGANConfig(),
    "small": DCGANConfig(latent_dim=64, hidden=(32, 64, 128)),
    "tiny": DCGANConfig(latent_dim=8, hidden=(4, 8, 16)),
}


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv/linear weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """(B, latent_dim) -> (B, C, S, S) in [-1, 1]."""

    def __init__(self, cfg: DCGANConfig = DCGANConfig()):
        super().__init__()
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        channels = list(reversed(cfg.hidden))  # 512, 256, 128
        s = cfg.bottom_size
        self.project = nn.Sequential(
            nn.Linear(cfg.latent_dim, channels[0] * s * s, bias=False),
            nn.Unflatten(1, (channels[0], s, s)),  # (B, 512, 8, 8)
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
        )
        layers = []
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [ConvTranspose2d(c_in, c_out, 4, 2, 1, impl=cfg.conv_impl), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [ConvTranspose2d(channels[-1], cfg.img_channels, 4, 2, 1, impl=cfg.conv_impl), nn.Tanh()]
        self.net = nn.Sequential(*layers)  # (B, 256, 16, 16) -> (B, 128, 32, 32) -> (B, 3, 64, 64)
        init_weights(self)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> image; named like the autoencoders' decoder so callers treat all models alike."""
        return self.net(self.project(z))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)


class Discriminator(nn.Module):
    """(B, C, S, S) -> (B,) real/fake logits."""

    def __init__(self, cfg: DCGANConfig = DCGANConfig()):
        super().__init__()
        self.cfg = cfg
        channels = [cfg.img_channels, *cfg.hidden]
        layers = []
        for i, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)  # (B, 512, 8, 8)
        self.classifier = nn.Linear(cfg.hidden[-1] * cfg.bottom_size**2, 1, bias=False)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.net(x).flatten(1)).squeeze(1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations after each LeakyReLU: what D has learnt to look at, coarse and fine."""
        out = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                out.append(x)
        return out


class GanEncoder(nn.Module):
    """(B, C, S, S) faces -> (B, latent_dim) latents of a generator: the discriminator's trunk with a
    linear head, trained for one generator (in-domain GAN inversion, Zhu et al. 2020) so that a
    projection starts close to its answer."""

    def __init__(self, cfg: DCGANConfig = DCGANConfig()):
        super().__init__()
        self.cfg = cfg
        trunk = Discriminator(cfg)
        self.net = trunk.net
        self.head = nn.Linear(cfg.hidden[-1] * cfg.bottom_size**2, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x).flatten(1))


# A GAN version's extras hold its discriminator, and its encoder where it has one, under these prefixes.
DISCRIMINATOR_PREFIX = "discriminator."
ENCODER_PREFIX = "encoder."


def module_extras(prefix: str, state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A network's weights as checkpoint extras; floating tensors cast to a floating `dtype` like the
    published G (for int8 the store quantises them as it publishes)."""
    cast = dtype is not None and dtype.is_floating_point
    return {prefix + k: v.detach().to(dtype) if cast and v.is_floating_point() else v.detach()
            for k, v in state_dict.items()}


def module_from_extras(module: nn.Module, prefix: str, extras: dict[str, torch.Tensor]) -> nn.Module | None:
    """`module` loaded with the extras under `prefix` (float32, eval mode, frozen), or None where there are none."""
    state = {k.removeprefix(prefix): v for k, v in extras.items() if k.startswith(prefix)}
    if not state:
        return None
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return module.eval().requires_grad_(False)


def discriminator_extras(state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    return module_extras(DISCRIMINATOR_PREFIX, state_dict, dtype)


def discriminator_from_extras(extras: dict[str, torch.Tensor], cfg: DCGANConfig) -> Discriminator | None:
    """The discriminator published with a GAN version, or None for versions without one."""
    return module_from_extras(Discriminator(cfg), DISCRIMINATOR_PREFIX, extras)


def encoder_from_extras(extras: dict[str, torch.Tensor], cfg: DCGANConfig) -> GanEncoder | None:
    """The encoder published with a GAN version, or None for versions without one."""
    return module_from_extras(GanEncoder(cfg), ENCODER_PREFIX, extras)
