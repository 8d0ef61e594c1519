import json
import os
import pickle
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file

from models_core.checkpoint import (
    EXTRAS_FILE, MANIFEST_FILE, WEIGHTS_FILE, CheckpointError, CheckpointStore, atomic_save_tensors, sha256_file,
)
from models_core.kinds import build_model
from models_core.latent import sample_prior
from models_core.vae import VAE, VAE_PRESETS
from tests.conftest import publish_tiny


def test_publish_then_load_rebuilds_the_same_network(store):
    torch.manual_seed(0)
    vae = VAE(VAE_PRESETS["tiny"]).eval()
    version = store.publish("faces", "vae", vae.cfg, vae.state_dict(), step=123, epoch=4,
                            data_fingerprint="abc", metrics={"mse": 0.01})
    assert version == 1
    ckpt = store.load("faces")
    assert isinstance(ckpt.model, VAE) and not ckpt.model.training
    z = torch.randn(3, 8)
    torch.testing.assert_close(ckpt.model.decode(z), vae.decode(z), rtol=0, atol=0)

    m = ckpt.manifest
    assert (m.name, m.kind, m.version, m.step, m.epoch, m.data_fingerprint) == ("faces", "vae", 1, 123, 4, "abc")
    assert m.config == VAE_PRESETS["tiny"].to_dict() and m.metrics == {"mse": 0.01}
    assert m.schema_version == 1 and m.created_at.endswith("+00:00")
    assert m.files == {WEIGHTS_FILE: sha256_file(ckpt.path / WEIGHTS_FILE)}


def test_published_files_are_readable_by_a_service_running_as_another_user(store):
    publish_tiny(store, "vae")
    for f in store.path("vae", 1).iterdir():
        assert f.stat().st_mode & 0o044 == 0o044, (f.name, oct(f.stat().st_mode))


def test_versions_are_numbered_monotonically_and_listed(store):
    assert store.models() == [] and store.latest("vae") is None
    assert [publish_tiny(store, "vae") for _ in range(3)] == [1, 2, 3]
    publish_tiny(store, "gan")
    assert store.models() == ["gan", "vae"]
    assert store.versions("vae") == [1, 2, 3] and store.latest("vae") == 3
    assert store.load("vae").manifest.version == 3
    assert store.load("vae", 2).manifest.version == 2
    assert sorted(os.listdir(store.root / "vae")) == ["000001", "000002", "000003"]


def test_extras_hold_the_pca_basis(store):
    publish_tiny(store, "ae")
    ckpt = store.load("ae")
    assert EXTRAS_FILE in ckpt.manifest.files
    assert ckpt.pca is not None and ckpt.pca.components.shape == (8, 8)
    publish_tiny(store, "gan", basis=False)
    assert store.load("gan").pca is None


def test_weights_are_inference_only_and_unwrapped(store):
    torch.manual_seed(0)
    vae = VAE(VAE_PRESETS["tiny"])
    wrapped = {f"_orig_mod.module.{k}": v for k, v in vae.state_dict().items()}
    store.publish("vae", "vae", vae.cfg, wrapped)
    keys = set(load_file(store.path("vae", 1) / WEIGHTS_FILE))
    assert keys == set(vae.state_dict())


def test_half_precision_publish_loads_into_float32(store):
    torch.manual_seed(0)
    vae = VAE(VAE_PRESETS["tiny"]).eval()
    store.publish("vae", "vae", vae.cfg, vae.state_dict(), dtype=torch.bfloat16)
    ckpt = store.load("vae")
    assert ckpt.manifest.weights_dtype == "bfloat16"
    stored = load_file(ckpt.path / WEIGHTS_FILE)
    assert stored["fc_mu.weight"].dtype == torch.bfloat16
    assert stored["encoder.net.0.1.num_batches_tracked"].dtype == torch.int64  # ints stay ints
    assert next(ckpt.model.parameters()).dtype == torch.float32
    torch.testing.assert_close(ckpt.model.fc_mu.weight, vae.fc_mu.weight, atol=1e-2, rtol=1e-2)


def test_publish_refuses_weights_that_do_not_fit_the_config(store):
    vae = VAE(VAE_PRESETS["tiny"])
    with pytest.raises(CheckpointError, match="do not fit"):
        store.publish("vae", "vae", VAE_PRESETS["small"], vae.state_dict())
    with pytest.raises(ValueError, match="unknown model kind"):
        store.publish("vae", "diffusion", VAE_PRESETS["tiny"], vae.state_dict())
    assert store.versions("vae") == []


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 65, "name with space", "..", "a\x00b"])
def test_invalid_model_names_never_reach_the_filesystem(store, name):
    with pytest.raises(CheckpointError, match="invalid model name"):
        store.versions(name)
    with pytest.raises(CheckpointError, match="invalid model name"):
        publish_tiny(store, "vae", name=name)


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, "../../etc"])
def test_invalid_versions_are_rejected(store, version):
    publish_tiny(store, "vae")
    with pytest.raises(CheckpointError):
        store.load("vae", version)


def test_unknown_model_and_version_errors_say_what_exists(store):
    with pytest.raises(CheckpointError, match="no published versions of model 'vae'"):
        store.load("vae")
    publish_tiny(store, "vae")
    with pytest.raises(CheckpointError, match=r"has no version 7; it has \[1\]"):
        store.load("vae", 7)


# --- corrupt versions: each error names the file and the problem ------------------------------


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(path, **changes):
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest.update(changes)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_corrupt_weights_fail_the_checksum(store):
    publish_tiny(store, "vae")
    corrupt(store.path("vae", 1) / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match=r"000001/weights\.safetensors: checksum mismatch"):
        store.load("vae")


def test_corrupt_extras_fail_the_checksum(store):
    publish_tiny(store, "vae")
    corrupt(store.path("vae", 1) / EXTRAS_FILE)
    with pytest.raises(CheckpointError, match=r"extras\.safetensors: checksum mismatch"):
        store.load("vae")


def test_missing_files_are_named(store):
    publish_tiny(store, "vae")
    (store.path("vae", 1) / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: file is missing"):
        store.load("vae")
    (store.path("vae", 1) / MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"manifest\.json: manifest is missing"):
        store.load("vae")


def test_manifest_problems_are_named(store):
    publish_tiny(store, "vae")
    path = store.path("vae", 1)
    (path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest.json: manifest is not valid JSON"):
        store.load("vae")

    publish_tiny(store, "vae")
    edit_manifest(store.path("vae", 2), schema_version=99)
    with pytest.raises(CheckpointError, match="schema version 99 is not supported"):
        store.load("vae", 2)

    publish_tiny(store, "vae")
    edit_manifest(store.path("vae", 3), kind="diffusion")
    with pytest.raises(CheckpointError, match="cannot build the network: unknown model kind 'diffusion'"):
        store.load("vae", 3)

    publish_tiny(store, "vae")
    edit_manifest(store.path("vae", 4), files={WEIGHTS_FILE: "0" * 64, "../../etc/passwd": "0" * 64})
    with pytest.raises(CheckpointError, match="checksum mismatch|invalid file name"):
        store.load("vae", 4)

    publish_tiny(store, "vae")
    edit_manifest(store.path("vae", 5), version=1)
    with pytest.raises(CheckpointError, match="describes 'vae' version 1, but lies at 'vae' version 5"):
        store.load("vae", 5)


def test_shape_mismatch_names_the_weights_file(store):
    publish_tiny(store, "vae")
    edit_manifest(store.path("vae", 1), config={**VAE_PRESETS["tiny"].to_dict(), "hidden": 8})
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: does not match the network.*size mismatch"):
        store.load("vae")


def test_loading_never_unpickles(store, monkeypatch):
    publish_tiny(store, "vae")

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert store.load("vae").manifest.version == 1


# --- atomicity --------------------------------------------------------------------------------


def test_a_failed_publish_leaves_no_trace(store, monkeypatch):
    publish_tiny(store, "vae")
    import models_core.checkpoint as checkpoint

    def exploding_save(tensors, path, **kwargs):
        open(path, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        publish_tiny(store, "vae")
    assert store.versions("vae") == [1]
    assert os.listdir(store.root / "vae") == ["000001"]
    store.load("vae")


CRASH_MID_PUBLISH = """
import os, sys
sys.path.insert(0, {repo!r})
from tests.conftest import publish_tiny
from models_core.checkpoint import CheckpointStore
os.rename = lambda *a: os._exit(9)  # the process dies just before the version becomes visible
publish_tiny(CheckpointStore({root!r}), "vae")
"""


def test_a_crash_mid_publish_keeps_earlier_versions_and_hides_the_partial_one(store):
    publish_tiny(store, "vae")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", CRASH_MID_PUBLISH.format(repo=repo, root=str(store.root))])
    assert proc.returncode == 9
    leftovers = [p for p in os.listdir(store.root / "vae") if p.startswith(".publish-")]
    assert len(leftovers) == 1  # the half-published version is still on disk ...
    assert store.versions("vae") == [1]  # ... but invisible
    store.load("vae")
    assert publish_tiny(store, "vae") == 2


def test_concurrent_publishers_get_distinct_versions(store):
    results, errors = [], []

    def publish(seed):
        try:
            results.append(publish_tiny(store, "vae", seed=seed))
        except Exception as e:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == [1, 2, 3, 4, 5, 6]
    for v in results:
        store.load("vae", v)


def test_update_metrics_rewrites_the_manifest_in_place(store):
    publish_tiny(store, "vae")
    store.update_metrics("vae", 1, {"fid": 42.0})
    manifest = store.load("vae").manifest
    assert manifest.metrics == {"fid": 42.0}
    assert [p for p in os.listdir(store.path("vae", 1)) if p.startswith(".")] == []


def test_atomic_save_tensors_replaces_whole_files(tmp_path):
    path = tmp_path / "run" / "training_state.safetensors"
    atomic_save_tensors({"step": torch.tensor([1])}, path, metadata={"note": "first"})
    atomic_save_tensors({"step": torch.tensor([2])}, path)
    assert load_file(path)["step"].item() == 2
    assert os.listdir(path.parent) == ["training_state.safetensors"]


def test_any_kind_round_trips(store):
    for kind in ("ae", "vae", "gan"):
        publish_tiny(store, kind)
        model = store.load(kind).model
        assert type(model) is type(build_model(kind, store.read_manifest(kind).config))


def test_copy_from_republishes_a_verified_version_as_the_next_one(tmp_path):
    source, dest = CheckpointStore(tmp_path / "train"), CheckpointStore(tmp_path / "serve")
    publish_tiny(source, "vae", seed=1, dtype=torch.bfloat16)
    store_metrics = {"fid": 50.0}
    source.update_metrics("vae", 1, store_metrics)
    publish_tiny(dest, "vae", seed=2)

    assert dest.copy_from(source, "vae", 1) == 2
    copied, original = dest.load("vae", 2), source.load("vae", 1)
    m = copied.manifest
    assert (m.kind, m.step, m.epoch, m.metrics, m.weights_dtype) == ("vae", 10, 1, store_metrics, "bfloat16")
    assert load_file(copied.path / WEIGHTS_FILE).keys() == load_file(original.path / WEIGHTS_FILE).keys()
    for key, value in load_file(original.path / WEIGHTS_FILE).items():
        assert torch.equal(load_file(copied.path / WEIGHTS_FILE)[key], value), key  # bf16 -> fp32 -> bf16 is exact
    torch.testing.assert_close(copied.pca.components, original.pca.components, rtol=0, atol=0)


def test_copy_from_refuses_a_corrupt_source(tmp_path):
    source, dest = CheckpointStore(tmp_path / "train"), CheckpointStore(tmp_path / "serve")
    publish_tiny(source, "gan")
    with open(source.path("gan", 1) / WEIGHTS_FILE, "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        dest.copy_from(source, "gan")
    assert dest.models() == []


def test_encoder_models_sample_the_fitted_gaussian_by_default_and_n01_on_request(store):
    for kind in ("ae", "vae", "gan"):
        publish_tiny(store, kind)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    vae, ae, gan = store.load("vae"), store.load("ae"), store.load("gan")
    assert (ae.default_prior, vae.default_prior, gan.default_prior) == ("fitted", "fitted", "standard")
    assert (vae.resolve_prior("auto"), gan.resolve_prior("auto"), vae.resolve_prior("standard")) == ("fitted", "standard", "standard")
    assert torch.equal(vae.sample_latents(5, g(), prior="standard"), sample_prior(5, 8, g()))
    assert torch.equal(gan.sample_latents(5, g()), sample_prior(5, 8, g()))
    z = ae.sample_latents(4000, g())
    torch.testing.assert_close(z.mean(0), ae.pca.mean.float(), atol=0.15, rtol=0)
    torch.testing.assert_close(ae.pca.project(z).std(0), torch.ones(8), atol=0.1, rtol=0)  # unit-variance coords
    with pytest.raises(ValueError, match="no fitted latent Gaussian"):
        gan.sample_latents(1, g(), prior="fitted")
    with pytest.raises(ValueError, match="unknown prior"):
        vae.sample_latents(1, g(), prior="uniform")
    with pytest.raises(ValueError, match="unknown prior"):
        gan.resolve_prior("uniform")
