import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from models_core.checkpoint import EXTRAS_FILE, WEIGHTS_FILE
from models_core.conv_transpose import ConvTranspose2d
from models_core.dcgan import ENCODER_PREFIX, GanEncoder, discriminator_extras, module_extras
from models_core.images import psnr
from models_core.latent import PcaBasis
from models_core.int8 import SCALE_SUFFIX, dequantized, quantized_state
from models_core.vae import VAE, VAE_PRESETS
from tests.conftest import publish_tiny, vivid_generator


@pytest.mark.parametrize("layer, out_axis", [(nn.Conv2d(6, 5, 4), 0), (nn.Linear(7, 3), 0),
                                             (ConvTranspose2d(6, 5, 4, 2, 1), 1), (nn.ConvTranspose2d(6, 5, 4), 1)])
def test_each_output_channel_has_its_own_scale_and_rounds_to_half_a_step(layer, out_axis):
    torch.manual_seed(0)
    with torch.no_grad():  # channels of very different sizes: one scale for all would flatten the small ones
        shape = [1] * layer.weight.ndim
        shape[out_axis] = -1
        layer.weight.mul_(torch.logspace(-3, 0, layer.weight.shape[out_axis]).view(shape))
    state = quantized_state(layer)
    q, scale = state["weight"], state["weight" + SCALE_SUFFIX]
    assert q.dtype == torch.int8 and scale.shape[out_axis] == layer.weight.shape[out_axis] and scale.numel() == scale.shape[out_axis]
    back = dequantized(state)
    assert set(back) == set(layer.state_dict()) and back["bias"].dtype == torch.float32
    error = (back["weight"] - layer.weight).abs()
    assert (error <= scale / 2 + 1e-9).all()  # within half a step of its own channel
    assert q.abs().amax().item() == 127


def test_an_int8_version_is_half_the_bytes_and_decodes_like_the_float_one(store):
    torch.manual_seed(0)
    vae = VAE(VAE_PRESETS["tiny"]).eval()
    store.publish("bf16", "vae", vae.cfg, vae.state_dict(), dtype=torch.bfloat16)
    store.publish("int8", "vae", vae.cfg, vae.state_dict(), dtype=torch.int8)
    bf16, int8 = store.load("bf16"), store.load("int8")
    assert int8.manifest.weights_dtype == "int8"
    stored = load_file(int8.path / WEIGHTS_FILE)
    assert stored["decoder.project.weight"].dtype == torch.int8 and "decoder.project.weight" + SCALE_SUFFIX in stored
    size = lambda ckpt: sum(t.numel() * t.element_size() for t in load_file(ckpt.path / WEIGHTS_FILE).values())
    assert size(int8) < 0.6 * size(bf16)
    z = torch.randn(16, vae.latent_dim)
    with torch.no_grad():
        exact = vae.decode(z)
        assert psnr(int8.model.decode(z), exact).mean() > 40


def test_a_gan_keeps_its_discriminator_encoder_and_basis_through_int8_and_copies(store):
    g, d = vivid_generator()
    e = GanEncoder(g.cfg).eval()
    extras = discriminator_extras(d.state_dict()) | module_extras(ENCODER_PREFIX, e.state_dict())
    extras |= PcaBasis.fit(torch.randn(64, g.latent_dim)).to_tensors()  # not weights: stored as they are
    store.publish("gan", "gan", g.cfg, g.state_dict(), extras=extras, dtype=torch.int8)
    ckpt = store.load("gan")
    stored = load_file(ckpt.path / EXTRAS_FILE)
    assert stored["discriminator.net.0.weight"].dtype == torch.int8 and stored["encoder.head.weight"].dtype == torch.int8
    assert torch.equal(stored["pca.components"], extras["pca.components"])
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    z = torch.randn(8, g.latent_dim)
    with torch.no_grad():  # a generator whose faces vary (weights ~ N(0, 0.3)), not a flat grey
        assert psnr(ckpt.model.decode(z), g.decode(z)).mean() > 35
        assert torch.allclose(ckpt.discriminator(x), d(x), atol=0.05)
        assert torch.allclose(ckpt.encoder(x), e(x), atol=0.05)

    again = store.copy_from(store, "gan")  # an int8 version copied stays int8, with the same values
    copy = store.load("gan", again)
    assert copy.manifest.weights_dtype == "int8"
    for key, value in load_file(copy.path / WEIGHTS_FILE).items():
        torch.testing.assert_close(value, load_file(ckpt.path / WEIGHTS_FILE)[key], rtol=1e-6, atol=0)


def test_a_version_can_be_promoted_to_int8_and_served(store, tmp_path):
    publish_tiny(store, "ae")
    version = store.copy_from(store, "ae", dtype=torch.int8)
    ckpt = store.load("ae", version)
    assert ckpt.manifest.weights_dtype == "int8" and ckpt.pca is not None
    assert torch.isfinite(ckpt.model.decode(torch.randn(2, ckpt.model.latent_dim))).all()
