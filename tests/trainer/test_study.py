"""`python -m trainer study`: the measurements on inputs with known answers, each verdict on inputs that make
it hold and fail, and tiny models through the whole command."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from models_core.checkpoint import CheckpointStore, Manifest
from tests.conftest import publish_tiny
from tests.trainer.conftest import run_trainer
from trainer.data import prepare_data
from trainer.fid import default_inception_path
from trainer.study import claims, measures
from trainer.study import verdicts as v
from trainer.study.cli import describe_version


def test_variance_in_three_dimensions_reaches_80_percent_at_k_3_and_the_claim_holds():
    rng = np.random.default_rng(0)
    scales = np.r_[[10.0, 8.0, 6.0], np.full(97, 0.3)]
    ratios = measures.explained_variance_ratio(rng.normal(size=(2000, 100)) * scales)
    assert measures.components_reaching(ratios)["80%"] == 3
    assert v.few_components({"vae": 3}).verdict == v.HOLDS


def test_isotropic_latents_need_most_components_and_the_claim_fails():
    ratios = measures.explained_variance_ratio(np.random.default_rng(0).normal(size=(2000, 100)))
    reach = measures.components_reaching(ratios)
    assert reach["80%"] > 60 and reach["95%"] > reach["90%"] > reach["80%"]
    assert v.few_components({"vae": reach["80%"]}).verdict == v.FAILS
    assert v.few_components({"vae": 3, "gan": reach["80%"]}).verdict == v.PARTLY


def test_truncation_keeps_the_span_and_drops_the_rest():
    z = torch.randn(50, 6, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    mean = torch.randn(6, dtype=torch.float64)
    assert torch.allclose(measures.truncate(z, mean, q.T, 6), z)
    assert torch.allclose(measures.truncate(z, mean, q.T, 0), mean.expand(50, 6))
    kept = measures.truncate(z, mean, q.T, 2) - mean
    assert torch.allclose(kept @ q.T[2:].T, torch.zeros(50, 4, dtype=torch.float64), atol=1e-12)


def test_kl_per_dimension_counts_only_dimensions_that_carry_information():
    mu = torch.zeros(100, 4)
    mu[:, 0] = torch.randn(100)  # used: means spread, variance shrunk
    logvar = torch.zeros(100, 4)
    logvar[:, 0] = -2.0
    kl = measures.kl_per_dimension(mu, logvar)
    assert kl[1:].abs().max() < 1e-12 and kl[0] > 0.5
    assert int((kl > measures.ACTIVE_UNIT_NATS).sum()) == 1


def test_sharpness_measures_rank_a_sharp_image_above_its_blur():
    sharp = torch.from_numpy(np.indices((64, 64)).sum(0) % 2 * 2.0 - 1).float().expand(4, 3, 64, 64)
    blurred = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False)
    assert measures.laplacian_variance(sharp).mean() > 10 * measures.laplacian_variance(blurred).mean()
    noise = torch.rand(8, 3, 64, 64) * 2 - 1
    smooth = torch.nn.functional.interpolate(torch.rand(8, 3, 4, 4) * 2 - 1, size=64, mode="bilinear")
    spectrum = measures.radial_power_spectrum(noise)
    assert spectrum.shape == (32,)
    assert measures.high_frequency_share(spectrum) > 0.3 > measures.high_frequency_share(measures.radial_power_spectrum(smooth))


def test_grid_measures_see_a_repeated_tile_as_no_variety():
    repeated = np.ones((49, 8))
    assert measures.mean_distance_within(repeated) == 0
    assert np.all(measures.grid_neighbour_distances(repeated, 7) == 0)
    ramp = np.arange(7.0)[:, None, None] * np.array([1.0, 0])[None, None] + np.arange(7.0)[None, :, None] * np.array([0, 1.0])
    steps = measures.grid_neighbour_distances(ramp.reshape(49, 2), 7)
    assert len(steps) == 84 and np.allclose(steps, 1)


def test_correlations_ignore_unknown_labels():
    coords = np.arange(10.0)[:, None]
    labels = np.array([[-1], [-1], [-1], [-1], [-1], [1], [1], [1], [1], [0]])
    labels[9, 0] = 0
    r = measures.correlations(np.c_[coords, -coords], labels)
    assert r[0, 0] > 0.8 and np.isclose(r[1, 0], -r[0, 0])
    assert np.isnan(measures.correlations(coords, np.zeros((10, 1)))).all()


def test_path_length_of_identical_features_is_zero():
    f = np.random.default_rng(0).normal(size=(20, 5))
    assert measures.perceptual_path_length(f, f, 1e-4)["mean"] == 0
    assert measures.perceptual_path_length(f, f + 1e-4, 1e-4)["mean"] == pytest.approx(5)


@pytest.mark.parametrize("psnr_at_30, active, expected", [(19.5, 20, v.HOLDS), (17.0, 100, v.FAILS), (19.5, 100, v.PARTLY)])
def test_compression_verdict(psnr_at_30, active, expected):
    by_k = {"vae": {2: 14.0, 30: psnr_at_30, 100: 20.0}}
    assert v.compressible(by_k, active, 100, {"vae": 15, "ae": 25}).verdict == expected


def test_slerp_verdict():
    assert v.slerp_beats_lerp({"gan": {"lerp": 60, "slerp": 40}, "vae": {"lerp": 90, "slerp": 70}}).verdict == v.HOLDS
    assert v.slerp_beats_lerp({"gan": {"lerp": 40, "slerp": 60}}).verdict == v.FAILS
    assert v.slerp_beats_lerp({"gan": {"lerp": 50, "slerp": 49}}).verdict == v.PARTLY  # within 5%: a tie
    assert v.slerp_beats_lerp(None).verdict == v.NOT_MEASURED


def test_grid_structure_verdict():
    structured = {"ae": {"variety": 0.1, "step_spread": 0.3}, "vae": {"variety": 0.6, "step_spread": 0.3}}
    assert v.vae_grid_more_structured({"ae": 300, "vae": 100}, structured).verdict == v.HOLDS
    jumpy = {"ae": {"variety": 0.6, "step_spread": 0.3}, "vae": {"variety": 0.3, "step_spread": 1.2}}
    assert v.vae_grid_more_structured({"ae": 100, "vae": 300}, jumpy).verdict == v.FAILS
    assert v.vae_grid_more_structured({"ae": 300, "vae": 100}, jumpy).verdict == v.PARTLY


def test_semantic_verdict():
    named = [("brightness", 0.8), ("Male", 0.5), ("Young", 0.4), ("Smiling", 0.35), ("Bangs", 0.3)] + [("Bald", 0.1)] * 5
    assert v.semantic_components({"vae": named}).verdict == v.HOLDS
    assert v.semantic_components({"vae": [("Bald", 0.1)] * 10}).verdict == v.FAILS
    assert v.semantic_components({"vae": [("Bald", 0.5)] * 3 + [("Bald", 0.1)] * 7}).verdict == v.PARTLY
    assert v.semantic_components({}).verdict == v.NOT_MEASURED


def test_sharpness_verdict():
    assert v.gan_sharper({"gan": 0.02, "vae": 0.005}).verdict == v.HOLDS
    assert v.gan_sharper({"gan": 0.006, "vae": 0.005}).verdict == v.PARTLY
    assert v.gan_sharper({"gan": 0.004, "vae": 0.005}).verdict == v.FAILS


def run_log(folder, kind: str, rows: list[dict], **config):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": kind, **config}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def vae_rows(kl_rises: bool) -> list[dict]:
    return [{"step": s, "loss": 1000.0, "recon": 0.05, "kl": (10 + 10 * s if kl_rises else 300.0)} for s in range(1, 101)]


def gan_rows(balanced: bool) -> list[dict]:
    return [{"step": s, "D_x": 0.7 if balanced else 0.99, "D_G_z": 0.3 if balanced else 0.01} for s in range(1, 101)]


def test_training_dynamics_from_run_logs(tmp_path):
    run_log(tmp_path / "good" / "00001-vae", "vae", vae_rows(True), beta_kl=0.03)
    run_log(tmp_path / "good" / "00002-gan", "gan", gan_rows(True))
    figures, _, verdict = claims.claim7_dynamics(tmp_path / "good")
    assert verdict.verdict == v.HOLDS, verdict
    assert figures["gan"]["balanced_share"] == 1.0 and figures["vae"]["recon_share_early"] > 0.99
    run_log(tmp_path / "bad" / "00001-vae", "vae", vae_rows(False), beta_kl=3.0)
    run_log(tmp_path / "bad" / "00002-gan", "gan", gan_rows(False))
    assert claims.claim7_dynamics(tmp_path / "bad")[2].verdict == v.FAILS
    assert claims.claim7_dynamics(tmp_path / "none")[2].verdict == v.NOT_MEASURED


def test_the_newest_run_of_a_kind_is_read(tmp_path):
    run_log(tmp_path / "00001-vae", "vae", vae_rows(False))
    run_log(tmp_path / "00003-vae", "vae", vae_rows(True))
    (tmp_path / "00004-vae").mkdir()  # no log yet
    assert claims.latest_run(tmp_path, "vae").name == "00003-vae"
    assert claims.latest_run(tmp_path, "gan") is None


@pytest.fixture(scope="module")
def study_inputs(tmp_path_factory):
    """Tiny AE, VAE and GAN; 96 labelled faces split by thirds; a VAE and a GAN run log."""
    root = tmp_path_factory.mktemp("study")
    src = root / "src" / "img_align_celeba"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    attrs = []
    for i in range(1, 97):
        a = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        smiling = rng.random() < 0.5
        if smiling:
            a[40:, :] //= 2
        Image.fromarray(a).save(src / f"{i:06d}.png")
        attrs.append(f"{i:06d}.png {1 if smiling else -1:2d} {1 if rng.random() < 0.5 else -1:2d}")
    (root / "src" / "list_attr_celeba.txt").write_text("\n".join(["96", "Smiling Male", *attrs]) + "\n")
    (root / "src" / "list_eval_partition.txt").write_text("".join(f"{i:06d}.png {min(2, 3 * (i - 1) // 96)}\n" for i in range(1, 97)))
    prepare_data(root / "src", root / "data", workers=1, progress=False)
    store = CheckpointStore(root / "ckpt")
    for kind in ("ae", "vae", "gan"):
        publish_tiny(store, kind)
    run_log(root / "runs" / "00001-vae", "vae", vae_rows(True), beta_kl=0.03)
    run_log(root / "runs" / "00002-gan", "gan", gan_rows(True))
    return root


PLOTS = [f"claim{i}.png" for i in range(1, 8)]


def same_numbers(a, b) -> bool:
    """Equal, floats to a relative 1e-5."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_numbers(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_numbers, a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5)
    return a == b


@pytest.mark.skipif(default_inception_path() is None, reason="pip install '.[eval]' for the Inception network")
def test_the_whole_command_writes_every_plot_number_and_verdict(study_inputs, tmp_path):
    out = tmp_path / "study"
    r = run_trainer("study", "--data", study_inputs / "data", "--checkpoints", study_inputs / "ckpt", "--runs",
                    study_inputs / "runs", "--out", out, "--n", 16, "--ppl-paths", 4, "--cache", tmp_path / "cache",
                    "--no-progress", cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == PLOTS
    report = json.loads((out / "study.json").read_text())
    assert sorted(report["claims"]) == [str(i) for i in range(1, 8)]
    for number, claim in report["claims"].items():
        assert claim["verdict"]["verdict"] in (v.HOLDS, v.PARTLY, v.FAILS), (number, claim["verdict"])
        assert claim["verdict"]["threshold"]
    f = report["claims"]
    assert set(f["1"]["figures"]["components_reaching"]) == {"ae", "vae", "gan"}
    assert f["2"]["figures"]["vae_latent_dim"] == 8 and "vae_active_units" in f["2"]["figures"]
    for kind in ("gan", "vae"):
        g = f["3"]["figures"][kind]
        assert {"lerp", "slerp"} <= set(g["midpoint"]) and g["endpoints"]["fid"] > 0 and set(g["ppl"]) == {"lerp", "slerp"}
        assert g["midpoint_norm"]["lerp"] < g["midpoint_norm"]["slerp"]  # lerp cuts inside the sphere
    assert {"variety", "step_mean", "step_spread"} <= set(f["4"]["figures"]["vae"]["grid"])
    assert "Smiling" in json.dumps(f["5"]["figures"]["vae"]) or "Male" in json.dumps(f["5"]["figures"]["vae"])
    assert set(f["6"]["figures"]["laplacian_variance"]) == {"real", "gan", "vae", "ae"}
    assert set(f["7"]["figures"]) == {"vae", "gan"}
    readme = (out / "README.md").read_text()
    for i in range(1, 8):
        assert f"## {i}. " in readme and f"(claim{i}.png)" in readme
    assert len(list((tmp_path / "cache").rglob("*.npy"))) >= 10  # generated sets' features, for the next run

    again = run_trainer("study", "--data", study_inputs / "data", "--checkpoints", study_inputs / "ckpt", "--runs",
                        study_inputs / "runs", "--out", tmp_path / "again", "--n", 16, "--ppl-paths", 4, "--cache",
                        tmp_path / "cache", "--no-progress", cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr
    # the same numbers from cached features, to float32's precision (a KID std once differed in its 7th digit)
    assert same_numbers(json.loads((tmp_path / "again" / "study.json").read_text())["claims"], report["claims"])


def test_without_inception_the_fid_claims_say_not_measured(study_inputs, tmp_path):
    out = tmp_path / "study"
    r = run_trainer("study", "--data", study_inputs / "data", "--checkpoints", study_inputs / "ckpt", "--runs",
                    study_inputs / "runs", "--out", out, "--n", 16, "--no-fid", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "study.json").read_text())["claims"]
    assert report["3"]["verdict"]["verdict"] == v.NOT_MEASURED
    assert report["6"]["verdict"]["verdict"] in (v.HOLDS, v.PARTLY, v.FAILS)  # sharpness needs no Inception


def test_a_store_without_the_three_kinds_is_a_clear_error(study_inputs, tmp_path):
    r = run_trainer("study", "--data", study_inputs / "data", "--checkpoints", study_inputs / "ckpt", "--gan", "vae",
                    "--out", tmp_path / "o", "--no-fid", cwd=tmp_path)
    assert r.returncode == 1 and "is a vae, not a gan" in r.stderr and "Traceback" not in r.stderr
    r = run_trainer("study", "--data", study_inputs / "data", "--checkpoints", tmp_path / "empty", "--out", tmp_path / "o",
                    "--no-fid", cwd=tmp_path)
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_a_version_trained_on_from_another_says_where_its_epochs_start():
    fresh = Manifest(name="gan", kind="gan", version=6, config={}, created_at="", files={}, step=5988, epoch=12)
    assert describe_version(fresh) == "gan v6 (trained to epoch 12, step 5988)"
    fresh.provenance["init_from"] = "/somewhere/checkpoints/gan/000005"
    assert describe_version(fresh) == "gan v6 (trained to epoch 12, step 5988, from gan/000005's weights)"
