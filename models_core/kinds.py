"""Model kinds a checkpoint can hold, and how to rebuild one from its manifest's config."""

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from models_core.dcgan import DCGAN_PRESETS, DCGANConfig, Generator
from models_core.vae import VAE, VAE_PRESETS, Autoencoder, VAEConfig


@dataclass(frozen=True)
class ModelKind:
    network: type[nn.Module]  # the inference network a published version holds
    config: type
    presets: dict[str, Any]
    has_encoder: bool


MODEL_KINDS: dict[str, ModelKind] = {
    "ae": ModelKind(Autoencoder, VAEConfig, VAE_PRESETS, has_encoder=True),
    "vae": ModelKind(VAE, VAEConfig, VAE_PRESETS, has_encoder=True),
    "gan": ModelKind(Generator, DCGANConfig, DCGAN_PRESETS, has_encoder=False),
}


def get_kind(kind: str) -> ModelKind:
    try:
        return MODEL_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {', '.join(MODEL_KINDS)}") from None


def config_from_dict(kind: str, config: dict) -> Any:
    """Rebuild a config dataclass from its JSON form; unknown or invalid fields are errors."""
    cls = get_kind(kind).config
    unknown = set(config) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"config for kind {kind!r} has unknown fields: {', '.join(sorted(unknown))}")
    return cls(**config)


def network_differences(a: dict, b: dict) -> dict[str, tuple[Any, Any]]:
    """{field: (a's, b's)} where two network configs in dict form differ. conv_impl is left out: it
    picks the kernel that computes a transposed convolution, not the weights."""
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if k != "conv_impl" and a.get(k) != b.get(k)}


def build_model(kind: str, config: Any) -> nn.Module:
    """The inference network of `kind`, from a config dataclass or its dict form."""
    if isinstance(config, dict):
        config = config_from_dict(kind, config)
    return get_kind(kind).network(config)
