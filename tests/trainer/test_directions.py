"""Attribute directions on tiny data with an attribute the test controls: the left half of the face is
brighter. The fitted direction must edit it; a random direction must not."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from models_core.attributes import AttributeDirection, AttributeDirections, edit_offsets
from models_core.checkpoint import CheckpointStore
from models_core.figures import Renderer
from models_core.images import from_uint8
from models_core.precision import choose_precision
from tests.trainer.conftest import run_trainer
from trainer.config import TrainConfig
from trainer.data import PackedFaces, prepare_data
from trainer.directions import (LabelledFaces, NoLabels, fit_boundary, fit_directions, fit_mean_difference,
                               labelled_training_faces, male_moves_at_random, random_directions, rate_edits)
from trainer.loop import train

N = 192


def synthetic_face(i: int, bright_left: bool) -> Image.Image:
    rng = np.random.default_rng(i)
    a = np.full((64, 64, 3), rng.integers(60, 120, 3), np.uint8).astype(np.int16)
    a += rng.integers(-20, 20, (64, 64, 1)).astype(np.int16)
    if bright_left:
        a[:, :32] += 110
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def bright_left(tmp_path_factory):
    """A dataset of N faces, every one labelled (LeftBright, Random), and a tiny AE trained on it."""
    root = tmp_path_factory.mktemp("bright_left")
    (root / "src" / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(1, N + 1):
        left = bool(rng.random() < 0.5)
        synthetic_face(i, left).save(root / "src" / "img_align_celeba" / f"{i:06d}.png")
        rows.append(f"{i:06d}.png {1 if left else -1:2d} {1 if rng.random() < 0.5 else -1:2d}")
    (root / "src" / "list_attr_celeba.txt").write_bytes(("\r\n".join([str(N), "LeftBright Random", *rows]) + "\r\n").encode())
    prepare_data(root / "src", root / "data", workers=1, progress=False)
    cfg = TrainConfig(model="ae", data=root / "data", preset="tiny", batch_size=16, epochs=40, lr=2e-3, pca_samples=16,
                      runs_dir=root / "runs", checkpoints=root / "ckpt", progress=False)
    train(cfg)
    return root


def left_minus_right(images: torch.Tensor) -> torch.Tensor:
    x = images.float()
    return x[..., :32].mean((1, 2, 3)) - x[..., 32:].mean((1, 2, 3))


def edit_rise(r: Renderer, directions: AttributeDirections, name: str, n: int = 16) -> torch.Tensor:
    """Per face: left-minus-right brightness at +1 minus at -1 scale along `name` (short of saturating)."""
    z = r.ckpt.sample_latents(n, torch.Generator().manual_seed(1))
    images = r.decode(directions.edit(z, name, edit_offsets(1.0, 2)).reshape(2 * n, -1)).reshape(n, 2, 3, 64, 64)
    return left_minus_right(images[:, 1]) - left_minus_right(images[:, 0])


def test_the_fitted_direction_edits_the_attribute_and_a_random_one_does_not(bright_left):
    ckpt = CheckpointStore(bright_left / "ckpt").load("ae")
    r = Renderer(ckpt, torch.device("cpu"), choose_precision("fp32", "cpu"))
    labelled = labelled_training_faces(PackedFaces.open(bright_left / "data"))
    directions, report = fit_directions(r, labelled.half(0))
    assert report["LeftBright"]["published"] and report["LeftBright"]["accuracy"] > 0.95
    assert report["LeftBright"]["threshold_accuracy"] > 0.9  # along the class-mean difference, the direction
    assert not report["Random"]["published"]  # a coin-flip label has no reliable boundary
    assert directions.names == ["LeftBright"]
    rise = edit_rise(r, directions, "LeftBright")
    assert (rise > 10).float().mean() >= 0.9, rise  # brightness levels of 0-255

    # A random unit vector in 8 dimensions has |cos| ~0.3 with the attribute's axis on average: over
    # several, its edits move the attribute a third as much (a broken fit would score about 1).
    fitted, g, moved = directions["LeftBright"], torch.Generator().manual_seed(0), []
    for _ in range(8):
        random = torch.randn(fitted.direction.shape, generator=g)
        random = AttributeDirections([AttributeDirection("LeftBright", random / random.norm(), fitted.scale, 1.0, 1)])
        moved.append(float(edit_rise(r, random, "LeftBright").abs().mean()))
    assert np.mean(moved) < 0.6 * float(rise.mean()), (moved, rise.mean())


def test_only_labelled_training_faces_are_used(bright_left):
    data = PackedFaces.open(bright_left / "data")
    labelled = labelled_training_faces(data)
    assert len(labelled.faces) == len(data.splits["train"]) < N  # every face is labelled, only train ones are used
    a, b = labelled.half(0), labelled.half(1)
    assert len(a.faces) + len(b.faces) == len(labelled.faces)
    assert not any(torch.equal(x, y) for x in a.faces[:8] for y in b.faces)


def test_a_dataset_without_labels_is_a_clear_error(tmp_path, packed):
    with pytest.raises(NoLabels, match="has no attribute labels"):
        labelled_training_faces(PackedFaces.open(packed))


def test_the_boundary_normal_points_to_the_attribute():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = (x[:, 2] - 0.5 * x[:, 4] > 0).astype(int)
    direction, accuracy = fit_boundary(x, y)
    assert accuracy > 0.9 and abs(np.linalg.norm(direction) - 1) < 1e-9
    assert direction[2] > 0.8 and direction[4] < -0.3


def test_the_mean_difference_follows_what_the_attribute_changes_most():
    # The attribute shifts axis 0 (wide spread) by 2 and axis 1 (narrow) by 0.2: both separate the
    # labels, the narrow axis alone almost perfectly, which a logistic normal would lean on.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    x = rng.normal(size=(600, 4)) * [1.0, 0.02, 1.0, 1.0] + np.outer(y, [2.0, 0.2, 0, 0])
    direction, accuracy = fit_mean_difference(x, y)
    assert accuracy > 0.8 and abs(np.linalg.norm(direction) - 1) < 1e-9
    assert direction[0] > 0.98 and direction[1] > 0.05 and np.abs(direction[2:]).max() < 0.1
    assert fit_boundary(x, y)[0][1] > 0.9  # the logistic normal: the narrow axis
    _, chance = fit_mean_difference(x, rng.integers(0, 2, 600))
    assert chance < 0.6


def test_directions_cli_publishes_a_new_version_with_the_same_weights(bright_left, tmp_path):
    import shutil

    from tests.conftest import publish_vivid_gan

    shutil.copytree(bright_left / "ckpt", tmp_path / "ckpt")
    store = CheckpointStore(tmp_path / "ckpt")
    publish_vivid_gan(store, name="gan")
    # The GAN first: its classifier must not cap the AE's accuracies (it did once).
    proc = run_trainer("directions", "--model", "gan", "ae", "--data", bright_left / "data", "--checkpoints", tmp_path / "ckpt",
                       "--classifier-epochs", "2", "--gan-samples", "200", "--no-progress", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr  # 1: some model (the random tiny GAN) has no reliable direction
    assert "LeftBright" in proc.stdout and "published ae v2" in proc.stdout
    old, new = store.load("ae", 1), store.load("ae", 2)
    assert new.attributes.names == ["LeftBright"] and not len(old.attributes)
    assert new.manifest.files["weights.safetensors"] == old.manifest.files["weights.safetensors"]  # byte-identical weights
    entry = new.manifest.metrics["attributes"]["by_attribute"]["LeftBright"]
    assert entry["published"] and "classifier_accuracy" not in entry
    proc = run_trainer("directions", "--model", "ae", "--data", tmp_path / "nowhere", "--checkpoints", tmp_path / "ckpt", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "nowhere" in proc.stderr
    proc = run_trainer("directions", "--model", "ae", "--data", bright_left / "data", "--span", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--span > 0" in proc.stderr


class BrightnessJudge:
    """Stands in for the attribute CNN: P(LeftBright) from how much brighter the left half is."""

    def probabilities(self, x, batch=256, autocast=None):
        return torch.sigmoid(8 * (left_minus_right(x) - 0.3))[:, None].expand(-1, 2).clone()


def test_a_gan_direction_is_the_boundary_of_what_the_classifier_says_about_its_samples(store):
    from tests.conftest import publish_vivid_gan

    publish_vivid_gan(store, name="gan")
    r = Renderer(store.load("gan"), torch.device("cpu"), choose_precision("fp32", "cpu"))
    names = ["LeftBright", "Other"]
    fit = LabelledFaces(names, torch.zeros(1, 3, 64, 64), torch.ones(1, 2, dtype=torch.int8))
    # held-out real faces the judge gets right for LeftBright and wrong for Other: only LeftBright is reliable
    faces = torch.stack([synthetic_face_tensor(i, i % 2 == 0) for i in range(20)])
    labels = torch.tensor([[1 if i % 2 == 0 else -1, -1 if i % 2 == 0 else 1] for i in range(20)], dtype=torch.int8)
    directions, report = fit_directions(r, fit, BrightnessJudge(), gan_samples=2000,
                                        held_out=LabelledFaces(names, faces, labels))
    assert report["LeftBright"]["boundary_accuracy"] > 0.9 and report["LeftBright"]["classifier_accuracy"] == 1.0
    assert report["Other"]["classifier_accuracy"] == 0.0 and not report["Other"]["published"]
    assert directions.names == ["LeftBright"] and report["LeftBright"]["n"] == 800  # 20% from each end of 2,000
    assert (edit_rise(r, directions, "LeftBright") > 0).float().mean() >= 0.9


def synthetic_face_tensor(i: int, bright_left: bool) -> torch.Tensor:
    return from_uint8(torch.from_numpy(np.asarray(synthetic_face(i, bright_left))).permute(2, 0, 1))


def test_random_directions_hold_what_they_are_told_and_match_the_latents_spread(bright_left):
    ckpt = CheckpointStore(bright_left / "ckpt").load("ae")
    r = Renderer(ckpt, torch.device("cpu"), choose_precision("fp32", "cpu"))
    directions, _ = fit_directions(r, labelled_training_faces(PackedFaces.open(bright_left / "data")).half(0))
    randoms = random_directions(r, directions, ["LeftBright"], count=4, seed=3)
    spread = ckpt.sample_latents(4000, torch.Generator().manual_seed(3))
    held = directions["LeftBright"].direction
    for name in randoms.names:
        d = randoms[name]
        assert abs(float(d.direction.norm()) - 1) < 1e-5 and abs(float(d.direction @ held)) < 1e-5
        assert d.scale == pytest.approx(float((spread @ d.direction).std()), rel=1e-4)
    assert len({tuple(randoms[n].direction.tolist()) for n in randoms.names}) == 4


def test_the_random_baseline_rates_edits_that_hold_male(bright_left):
    """With the brightness attribute standing in for Male, random edits holding it barely move what the judge
    says of it, while an edit along it moves it fully: the baseline holds Male, as its figure claims."""
    ckpt = CheckpointStore(bright_left / "ckpt").load("ae")
    r = Renderer(ckpt, torch.device("cpu"), choose_precision("fp32", "cpu"))
    fitted, _ = fit_directions(r, labelled_training_faces(PackedFaces.open(bright_left / "data")).half(0))
    male = AttributeDirections([dataclasses.replace(fitted["LeftBright"], name="Male")])
    names = ["Male", "Other"]
    baseline = male_moves_at_random(r, male, BrightnessJudge(), names, n_faces=16, span=2.0, count=8)
    other = AttributeDirections([dataclasses.replace(fitted["LeftBright"], name="Other")])
    along = rate_edits(r, other, BrightnessJudge(), names, n_faces=16, span=2.0)["Other"]["plain"]["male_moves"]
    # (not holding it, these random edits move it 0.2: a quarter as much as the edit along it)
    assert along > 0.5 and baseline < 0.1 * along, (baseline, along)
    assert male_moves_at_random(r, fitted, BrightnessJudge(), ["LeftBright", "Other"]) is None  # no Male direction
