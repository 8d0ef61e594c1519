import os

import pytest
import torch

from models_core.checkpoint import CheckpointStore
from models_core.latent import PcaBasis
from models_core.kinds import MODEL_KINDS, build_model


def publish_tiny(store: CheckpointStore, kind: str, name: str | None = None, seed: int = 0, basis: bool = True, **kwargs) -> int:
    """Publish a randomly initialised tiny network of `kind` with a PCA (AE/VAE) or GANSpace basis."""
    from trainer.bases import ganspace_basis

    torch.manual_seed(seed)
    config = MODEL_KINDS[kind].presets["tiny"]
    model = build_model(kind, config).eval()
    extras = None
    if basis and MODEL_KINDS[kind].has_encoder:
        latents = torch.randn(64, config.latent_dim, generator=torch.Generator().manual_seed(seed))
        extras = PcaBasis.fit(latents).to_tensors()
    elif basis:
        extras = ganspace_basis(model, torch.device("cpu"), n_samples=64, seed=seed).to_tensors()
    return store.publish(kind if name is None else name, kind, config, model.state_dict(), step=10, epoch=1, extras=extras, **kwargs)


def vivid_generator(seed: int = 0):
    """A tiny DCGAN generator whose faces differ from latent to latent, and its discriminator.
    Freshly initialised (weights ~ N(0, 0.02)), G draws near-uniform grey for every z, which any
    latent reproduces; with larger weights, only latents near the right one do."""
    from models_core.dcgan import DCGAN_PRESETS, Discriminator, Generator

    torch.manual_seed(seed)
    cfg = DCGAN_PRESETS["tiny"]
    g, d = Generator(cfg).eval(), Discriminator(cfg).eval()
    with torch.no_grad():
        for p in g.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return g, d


def publish_vivid_gan(store: CheckpointStore, name: str = "vivid-gan", basis: bool = False) -> int:
    """A vivid_generator published as a GAN version with its discriminator, for projection."""
    from models_core.dcgan import discriminator_extras
    from trainer.bases import ganspace_basis

    g, d = vivid_generator()
    extras = discriminator_extras(d.state_dict())
    if basis:
        extras |= ganspace_basis(g, torch.device("cpu"), n_samples=64, seed=0).to_tensors()
    return store.publish(name, "gan", g.cfg, g.state_dict(), step=10, epoch=1, extras=extras)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """item.rep_setup / rep_call / rep_teardown: lets a fixture see whether its test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def store(tmp_path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "checkpoints")


# Reproducible property tests by default; HYPOTHESIS_PROFILE=explore searches new examples.
from hypothesis import settings  # noqa: E402

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
