import torch

from models_core.checkpoint import CheckpointStore
from tests.conftest import publish_tiny
from tests.trainer.conftest import run_trainer
from trainer.evaluate import laplacian_pyramid, sliced_wasserstein, swd_by_level


def smooth_images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g) * 2 - 1, size=64, mode="bilinear")


def test_swd_is_near_zero_for_one_distribution_and_grows_with_noise():
    real, same = smooth_images(96, 0), smooth_images(96, 1)
    g = torch.Generator().manual_seed(2)
    scores = [swd_by_level(real, (same + s * torch.randn(same.shape, generator=g)).clamp(-1, 1))["swd_x1e3_avg"]
              for s in (0.0, 0.1, 0.3, 0.6)]
    assert scores == sorted(scores), scores
    assert scores[-1] > 2 * scores[0]


def test_sliced_wasserstein_of_shifted_gaussians_measures_the_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 2, generator=g)
    assert sliced_wasserstein(a, a.clone()) == 0
    # Both sets are standardised first, so only shape differences count: a uniform vs a Gaussian.
    u = (torch.rand(4000, 2, generator=g) - 0.5) * 12**0.5
    assert sliced_wasserstein(a, u) > 0.03
    # Projecting a few directions per pass (to bound memory) changes nothing but rounding.
    assert abs(sliced_wasserstein(a, u, dirs_per_pass=512) - sliced_wasserstein(a, u, dirs_per_pass=7)) < 1e-6


def test_laplacian_pyramid_reconstructs_the_image():
    x = smooth_images(2, 3)
    bands = laplacian_pyramid(x, 3)
    assert [b.shape[-1] for b in bands] == [64, 32, 16]
    from trainer.evaluate import _blur

    rebuilt = bands[-1]
    for band in reversed(bands[:-1]):
        up = torch.zeros_like(band)
        up[:, :, ::2, ::2] = rebuilt
        rebuilt = band + 4 * _blur(up)
    torch.testing.assert_close(rebuilt, x, atol=1e-5, rtol=0)


def test_evaluate_cli_writes_metrics_into_the_manifest(tmp_path, packed):
    store = CheckpointStore(tmp_path / "ckpt")
    publish_tiny(store, "vae")
    publish_tiny(store, "gan")
    for name in ("vae", "gan"):
        proc = run_trainer("evaluate", "--model", name, "--data", packed, "--checkpoints", store.root, "--n", "16",
                           "--no-fid", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "FID/KID skipped (--no-fid)" in proc.stdout
        assert ("reconstructing" in proc.stderr) == (name == "vae")  # a progress bar
    vae, gan = store.read_manifest("vae").metrics, store.read_manifest("gan").metrics
    assert vae["eval_split"] == "test" and vae["eval_n_real"] == 16 and vae["recon_mse"] > 0 and vae["recon_psnr_db"] > 0
    assert "swd_x1e3_avg" in vae and "swd_x1e3_avg" in gan and "recon_mse" not in gan
    assert (vae["eval_prior"], gan["eval_prior"]) == ("fitted", "standard")

    proc = run_trainer("evaluate", "--model", "vae", "--data", packed, "--checkpoints", store.root, "--n", "16",
                       "--no-fid", "--prior", "standard", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0 and "reconstructing" not in proc.stderr, proc.stderr
    both = store.read_manifest("vae").metrics
    assert both["swd_x1e3_avg"] == vae["swd_x1e3_avg"]  # the default prior's scores stay
    assert both["eval_prior@standard"] == "standard" and both["swd_x1e3_avg@standard"] != vae["swd_x1e3_avg"]
    proc = run_trainer("evaluate", "--model", "gan", "--data", packed, "--checkpoints", store.root, "--n", "16",
                       "--no-fid", "--prior", "fitted", cwd=tmp_path)
    assert proc.returncode == 1 and "no fitted latent Gaussian" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_trainer("evaluate", "--model", "nope", "--data", packed, "--checkpoints", store.root, cwd=tmp_path)
    assert proc.returncode == 1 and "no published versions of model 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_scores_training_faces_only_when_asked_and_says_when_n_is_capped(tmp_path, packed):
    store = CheckpointStore(tmp_path / "ckpt")
    publish_tiny(store, "vae")
    common = ["--model", "vae", "--checkpoints", store.root, "--no-fid"]
    proc = run_trainer("evaluate", *common, "--data", packed, "--split", "train", "--n", "16", cwd=tmp_path)
    assert proc.returncode == 1 and "--on-training-faces" in proc.stderr and "Traceback" not in proc.stderr
    assert "eval_split" not in store.read_manifest("vae").metrics

    proc = run_trainer("evaluate", *common, "--data", packed, "--split", "train", "--on-training-faces", "--n", "16",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "scored against TRAINING faces" in proc.stderr and "eval_split=train" in proc.stdout
    assert store.read_manifest("vae").metrics["eval_split"] == "train"

    proc = run_trainer("evaluate", *common, "--data", packed, "--n", "2000", cwd=tmp_path)  # 16 test faces
    assert proc.returncode == 0, proc.stderr
    assert "--n 2000 capped at 16" in proc.stderr and "eval_n_real=16" in proc.stdout
