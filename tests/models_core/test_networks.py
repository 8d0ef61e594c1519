import pytest
import torch
import torch.nn as nn

from models_core.conv_transpose import ConvTranspose2d
from models_core.dcgan import DCGAN_PRESETS, DCGANConfig, Discriminator, Generator
from models_core.kinds import MODEL_KINDS, build_model
from models_core.vae import VAE, VAE_PRESETS, Autoencoder, VAEConfig


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_seed_architectures_have_the_seed_parameter_counts():
    assert n_params(VAE()) == 26_972_619  # "27.0 M"
    assert n_params(Generator()) == 5_906_563  # "5.9 M"
    assert n_params(Discriminator()) == 2_661_888  # "2.7 M"
    # The autoencoder baseline is the VAE less its logvar head.
    assert n_params(Autoencoder()) == n_params(VAE()) - (16384 * 100 + 100)


def test_the_medium_autoencoder_is_the_seed_network_at_three_quarter_width():
    assert VAE_PRESETS["medium"] == VAEConfig(latent_dim=100, hidden=96)
    assert n_params(Autoencoder(VAE_PRESETS["medium"])) == 14_871_847  # 30 MB in bf16: what the bundle's 110 MB leaves


def test_seed_defaults():
    assert VAEConfig().latent_dim == 100 and VAEConfig().hidden == 128
    assert DCGANConfig().latent_dim == 100 and DCGANConfig().hidden == (128, 256, 512)
    assert VAEConfig().conv_impl == "native" and DCGANConfig().conv_impl == "native"


@pytest.mark.parametrize("preset", ["tiny", "small", "medium"])
def test_vae_and_ae_shapes(preset):
    cfg = VAE_PRESETS[preset]
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    recon, mu, logvar = VAE(cfg)(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (2, cfg.latent_dim)
    assert recon.abs().max() <= 1  # tanh output
    ae = Autoencoder(cfg)
    assert ae(x).shape == x.shape and ae.embed(x).shape == (2, cfg.latent_dim)


def test_vae_embed_is_the_posterior_mean_and_deterministic():
    vae = VAE(VAE_PRESETS["tiny"]).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(vae.embed(x), vae.encode(x)[0])
    torch.testing.assert_close(vae.embed(x), vae.embed(x))


def test_reparameterize_uses_the_given_generator():
    mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    a = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(1))
    b = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(VAE.reparameterize(mu + 2, torch.full((4, 3), -100.0)), mu + 2)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_dcgan_shapes(preset):
    cfg = DCGAN_PRESETS[preset]
    g, d = Generator(cfg), Discriminator(cfg)
    images = g(torch.randn(5, cfg.latent_dim))
    assert images.shape == (5, 3, 64, 64)
    assert d(images).shape == (5,)


def test_discriminator_returns_unbounded_logits():
    d = Discriminator(DCGAN_PRESETS["tiny"])
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())
    nn.init.constant_(d.classifier.weight, 1.0)
    logits = d(torch.rand(4, 3, 64, 64))
    assert (logits.abs() > 1).any()


def test_dcgan_init_and_layer_placement():
    torch.manual_seed(0)
    g, d = Generator(), Discriminator()
    for net in (g, d):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, ConvTranspose2d, nn.Linear)):
                assert abs(m.weight.std().item() - 0.02) < 0.002 and abs(m.weight.mean().item()) < 0.002
            if isinstance(m, nn.BatchNorm2d):
                assert abs(m.weight.mean().item() - 1) < 0.01 and m.bias.abs().max() == 0
    # D: conv, LeakyReLU(0.2) for the first block; conv, BN, LeakyReLU after that.
    kinds = [type(m).__name__ for m in d.net]
    assert kinds == ["Conv2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU"]
    assert all(m.negative_slope == 0.2 for m in d.net if isinstance(m, nn.LeakyReLU))
    # G: BN + ReLU after every transposed conv but the last, which feeds tanh.
    assert [type(m).__name__ for m in g.net][-2:] == ["ConvTranspose2d", "Tanh"]


@pytest.mark.parametrize("bad", [
    dict(img_size=60), dict(latent_dim=0), dict(conv_impl="cuda"),
])
def test_invalid_vae_configs_are_rejected(bad):
    with pytest.raises(ValueError):
        VAEConfig(**bad)


def test_dcgan_config_round_trips_through_json_form():
    cfg = DCGAN_PRESETS["tiny"]
    assert DCGANConfig(**cfg.to_dict()) == cfg
    assert cfg.to_dict()["hidden"] == [4, 8, 16]


def test_registry_builds_every_kind_from_a_dict():
    for kind, spec in MODEL_KINDS.items():
        model = build_model(kind, spec.presets["tiny"].to_dict())
        assert isinstance(model, spec.network)
        assert model.decode(torch.zeros(1, model.latent_dim)).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("diffusion", {})
    with pytest.raises(ValueError, match="unknown fields"):
        build_model("vae", {"latent_dim": 8, "depth": 3})
