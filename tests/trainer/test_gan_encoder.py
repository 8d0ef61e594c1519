"""The GAN encoder: trained for a frozen generator, it maps G's own faces back to their latents,
and the command publishes it with the generator's weight bytes."""

import contextlib

import torch

from models_core.images import from_uint8
from tests.conftest import publish_tiny, publish_vivid_gan, vivid_generator
from tests.trainer.conftest import run_trainer
from trainer.data import PackedFaces
from trainer.gan_encoder import train_encoder


def latent_error(E, G, n=64):
    z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        return float((E(G.decode(z)) - z).pow(2).mean())


def test_training_teaches_the_encoder_to_invert_the_generator(packed):
    g, d = vivid_generator()
    data = PackedFaces.open(packed)
    held_out = from_uint8(data.tensor("valid")).permute(0, 3, 1, 2).contiguous()
    untrained, _ = train_encoder(g, d, data.tensor("train"), held_out, torch.device("cpu"), contextlib.nullcontext,
                                 minutes=5, max_steps=1, batch_size=16, progress=False)
    trained, report = train_encoder(g, d, data.tensor("train"), held_out, torch.device("cpu"), contextlib.nullcontext,
                                    minutes=5, max_steps=300, batch_size=16, lr=1e-3, progress=False)
    assert report["steps"] == 300 and report["stopped_by"] == "step limit"
    assert latent_error(trained, g) < 0.5 * latent_error(untrained, g)


def test_the_command_publishes_the_generator_with_its_encoder(store, packed, tmp_path):
    publish_vivid_gan(store, name="gan")
    publish_tiny(store, "ae")
    proc = run_trainer("gan-encoder", "--model", "gan", "--data", packed, "--checkpoints", store.root, "--max-steps", "3",
                       "--batch-size", "8", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "published gan v2" in proc.stdout and "held-out faces" in proc.stdout
    old, new = store.load("gan", 1), store.load("gan", 2)
    assert old.encoder is None and new.encoder is not None and new.discriminator is not None
    assert new.manifest.files["weights.safetensors"] == old.manifest.files["weights.safetensors"]
    assert new.manifest.metrics["encoder"]["steps"] == 3
    proc = run_trainer("gan-encoder", "--model", "ae", "--data", packed, "--checkpoints", store.root, cwd=tmp_path)
    assert proc.returncode == 1 and "not a GAN" in proc.stderr and "Traceback" not in proc.stderr


def test_the_command_can_go_on_from_a_published_encoder(store, packed, tmp_path):
    publish_vivid_gan(store, name="gan")
    common = ["gan-encoder", "--model", "gan", "--data", packed, "--checkpoints", store.root, "--batch-size", "8", "--no-progress"]
    assert run_trainer(*common, "--max-steps", "3", cwd=tmp_path).returncode == 0
    proc = run_trainer(*common, "--max-steps", "1", "--lr", "0", "--init-from", store.path("gan", 2), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "starting from gan v2's encoder" in proc.stdout
    before, after = store.load("gan", 2).encoder.state_dict(), store.load("gan", 3).encoder.state_dict()
    for key, weight in before.items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):  # BN statistics are refitted
            assert torch.equal(after[key], weight), key
    assert store.load("gan", 3).manifest.metrics["encoder"]["init_from"] == str(store.path("gan", 2).resolve())
    proc = run_trainer(*common, "--init-from", store.path("gan", 1), cwd=tmp_path)
    assert proc.returncode == 1 and "has no encoder to start from" in proc.stderr
