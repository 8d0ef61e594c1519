"""The models shipped in checkpoints/: what the README's main command serves on a fresh clone."""

import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from safetensors import safe_open

from models_core.checkpoint import CheckpointStore
from service.app import create_app
from service.settings import Settings
from tests.conftest import publish_tiny
from tests.faces import assert_shows_faces, face_likeness
from tests.test_deployment import BUNDLED, BUNDLED_VERSIONS

ROOT = Path(__file__).resolve().parents[1]
STORE = CheckpointStore(ROOT / "checkpoints")


def test_the_bundle_is_one_version_per_model_of_inference_weights_in_int8_within_100_mb():
    total = 0
    for name in BUNDLED:
        assert STORE.versions(name) == [BUNDLED_VERSIONS[name]]  # the newest only, not a pile
        ckpt = STORE.load(name, BUNDLED_VERSIONS[name])  # verifies every checksum
        files = sorted(p.name for p in ckpt.path.iterdir())
        assert files == ["extras.safetensors", "manifest.json", "weights.safetensors"], files
        assert ckpt.manifest.weights_dtype == "int8"  # weight-only, dequantised at load
        assert "pca.components" in ckpt.extras
        with safe_open(ckpt.path / "weights.safetensors", "pt") as f:
            assert not [k for k in f.keys() if k.startswith(("D.", "discriminator", "optim"))]
        total += sum(p.stat().st_size for p in ckpt.path.iterdir())
    assert total <= 100 * 2**20, total  # every seed network, the GAN's D and E included


def test_commands_in_the_docs_and_help_texts_name_versions_the_bundle_has():
    """A copied `--init-from checkpoints/gan/NNNNNN` must find its folder on a fresh clone."""
    sources = [ROOT / "README.md", *(path for package in ("models_core", "trainer", "service")
                                     for path in sorted((ROOT / package).rglob("*.py")))]
    named = {(m[1], m[2], str(path.relative_to(ROOT))) for path in sources
             for m in re.finditer(r"(?<![\w/])checkpoints/(ae|vae|gan)/(\d{6})", path.read_text())}
    assert named, "the README names no bundled version folder"
    missing = sorted(where for name, version, where in named if int(version) != BUNDLED_VERSIONS[name])
    assert not missing, f"these name a version folder the bundle does not have: {missing}"


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundled_model_is_evaluated_against_held_out_faces(name):
    m = STORE.read_manifest(name, BUNDLED_VERSIONS[name])
    assert m.data_fingerprint and m.step > 0
    assert {"fid", "kid_mean", "kid_std", "eval_n_fake", "eval_n_real", "eval_split"} <= set(m.metrics)
    assert m.metrics["eval_split"] in ("valid", "test") and m.metrics["eval_n_real"] >= 500
    if m.kind != "gan":
        assert {"recon_mse", "recon_psnr_db"} <= set(m.metrics)


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundled_model_steers_smile_gender_and_hair_by_meaning(name):
    ckpt = STORE.load(name, BUNDLED_VERSIONS[name])
    assert {"Smiling", "Male", "Blond_Hair"} <= set(ckpt.attributes.names)
    assert all(a.accuracy >= 0.75 and a.n > 0 for a in ckpt.attributes.by_name.values())
    report = ckpt.manifest.metrics["attributes"]["by_attribute"]
    assert set(report) >= {"Eyeglasses", "Young"}  # reported, published or not
    for attribute in ("Smiling", "Male"):
        assert report[attribute]["edit"]["plain"]["rises"] >= 0.9 and report[attribute]["edit"]["plain"]["mean_rise"] >= 0.4


def test_the_default_settings_serve_the_bundled_models(monkeypatch):
    monkeypatch.chdir(ROOT)  # where run.sh starts the service
    with TestClient(create_app(Settings(_env_file=None))) as client:
        assert client.get("/readyz").status_code == 200
        served = {m["name"]: m["served_version"] for m in client.get("/models").json()["models"]}
        assert {name: served.get(name) for name in BUNDLED} == BUNDLED_VERSIONS
        for path in ("/sample?model=gan&n=4", "/sample?model=vae&n=4", "/reconstruct?model=ae&n=4",
                     "/pca-grid?model=vae&steps=3", "/interpolate?model=gan&steps=4",
                     "/edit?model=gan&attribute=Smiling&n=2", "/edit?model=ae&attribute=Male&n=2&hold=Smiling"):
            r = client.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", (path, r.text[:200])


def test_a_newly_trained_version_wins_over_the_bundled_one(tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(ROOT / "checkpoints" / "gan", root / "gan")
    publish_tiny(CheckpointStore(root), "gan")
    with TestClient(create_app(Settings(checkpoint_root=root, _env_file=None))) as client:
        newest = BUNDLED_VERSIONS["gan"] + 1
        assert client.get("/models").json()["models"][0]["served_version"] == newest
        assert client.get("/sample?model=gan&n=1").headers["x-model-version"] == str(newest)


@pytest.fixture(scope="module")
def bundled_client():
    with TestClient(create_app(Settings(checkpoint_root=ROOT / "checkpoints", precision="fp32", _env_file=None))) as client:
        yield client


@pytest.mark.parametrize("model", BUNDLED)
@pytest.mark.parametrize("path", ["/latent-grid?steps=8", "/pca-grid?steps=5", "/pca-point", "/interpolate"])
def test_every_default_view_of_a_trained_model_shows_faces(bundled_client, model, path):
    """Defaults centre sweeps on a sample, in each dimension's own spread: never z = 0's grey blob."""
    r = bundled_client.get(f"{path}&model={model}" if "?" in path else f"{path}?model={model}")
    assert r.status_code == 200, r.text
    assert_shows_faces(r.content, f"{path} on {model}")


def test_the_study_grid_around_zero_stays_reachable(bundled_client):
    """centre=zero&units=absolute is the old grid: for an unregularised AE it is flat colour."""
    r = bundled_client.get("/latent-grid?model=ae&steps=4&centre=zero&units=absolute")
    assert r.status_code == 200 and face_likeness(r.content) < 0.6


def test_the_bundled_gan_starts_projections_from_its_encoder(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert STORE.load("gan", BUNDLED_VERSIONS["gan"]).encoder is not None
    with TestClient(create_app(Settings(_env_file=None))) as client:
        gan = next(m for m in client.get("/models").json()["models"] if m["name"] == "gan")
        assert gan["projects_from_encoder"]
        r = client.get("/reconstruct?model=gan&n=4&steps=0")  # E(x) alone: real faces, not noise
        assert r.status_code == 200 and r.headers["x-projection-steps"] == "0"
        assert min(float(p) for p in r.headers["x-projection-psnr"].split(",")) > 12
