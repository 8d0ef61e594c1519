"""Attribute directions for a published version, fitted on labelled training faces only.

- AE/VAE: a linear boundary (logistic regression) between the latent means of faces with and
  without the attribute tells whether the latents know it (its accuracy); the direction is the
  difference between the two classes' mean latents (the attribute vectors of White 2016,
  "Sampling Generative Networks"). The boundary's normal separates the labels better but leans on
  latent directions of little spread that the decoder barely renders: along it Blond_Hair edits
  rose P(blond) 0.27-0.30 at 3σ, along the mean difference 0.67-0.70 (same rater). A threshold
  along the mean difference alone is a weaker classifier (the report keeps its accuracy too).
- GAN (InterFaceGAN, Shen et al. 2020): a CNN trained on the labelled faces labels many samples
  G(z); a linear boundary in z between the samples it is surest have the attribute and those it
  is surest lack it gives the direction.

Every boundary's cross-validated balanced accuracy is measured; only attributes with a reliable
boundary are published. A GAN's boundary separates what the CNN says, which is always easy at
its extremes, so there the CNN's own balanced accuracy on real faces it was not trained on counts
too: the reported accuracy is the lower of the two. Edits are then rated by a second classifier trained on the other half
of the labelled faces, which had no part in making the directions.
"""

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_score

from models_core.attributes import AttributeDirection, AttributeDirections, edit_offsets
from models_core.figures import Renderer
from models_core.images import from_uint8
from trainer.attribute_classifier import AttributeClassifier, train_classifier
from trainer.data import PackedFaces

MIN_ACCURACY = 0.75  # cross-validated balanced accuracy a boundary needs to be published
MIN_PER_CLASS = 10  # faces (or samples) on each side of a boundary, at the least
GAN_SAMPLES = 20_000
GAN_PICK = 0.2  # InterFaceGAN fits on the samples the classifier is surest of: this share from each end
RATED = ("Smiling", "Male", "Blond_Hair", "Eyeglasses", "Young")  # the model card's table


class NoLabels(ValueError):
    """The dataset has no attribute labels, or none in its training split."""


@dataclass
class LabelledFaces:
    names: list[str]  # attribute names
    faces: torch.Tensor  # (N, 3, H, W) in [-1, 1]
    labels: torch.Tensor  # (N, A) int8: +1, -1, 0 unknown

    def half(self, which: int, seed: int = 0) -> "LabelledFaces":
        """One of two disjoint seeded halves: 0 fits the directions, 1 trains the classifier that rates them."""
        order = torch.randperm(len(self.faces), generator=torch.Generator().manual_seed(seed))
        idx = order[which::2].sort().values
        return LabelledFaces(self.names, self.faces[idx], self.labels[idx])


def labelled_training_faces(data: PackedFaces, limit: int | None = None) -> LabelledFaces:
    """The training split's faces that have labels (the first `limit`); valid and test faces never take part."""
    found = data.attributes()
    if found is None:
        raise NoLabels(f"{data.root} has no attribute labels: prepare it again with CelebA's list_attr_celeba.txt "
                       "beside the images or named with --attributes")
    names, labels = found
    train = data.splits["train"]
    rows = train[(labels[train] != 0).any(1)][:limit]
    if len(rows) == 0:
        raise NoLabels(f"{data.root}: none of its training faces is labelled (labels are only fitted on the train split)")
    faces = from_uint8(torch.from_numpy(np.ascontiguousarray(data.images[rows]))).permute(0, 3, 1, 2).contiguous()
    return LabelledFaces(names, faces, torch.from_numpy(labels[rows]))


def folds(y: np.ndarray, seed: int) -> StratifiedKFold:
    """5 stratified folds, fewer where a class has fewer than 5 examples."""
    return StratifiedKFold(min(5, int(np.bincount(y).min())), shuffle=True, random_state=seed)


def fit_boundary(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """(unit normal of a logistic-regression boundary, its 5-fold cross-validated balanced accuracy)."""
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
    accuracy = float(cross_val_score(model, x, y, cv=folds(y, seed), scoring="balanced_accuracy").mean())
    w = model.fit(x, y).coef_[0]
    return w / np.linalg.norm(w), accuracy


def fit_mean_difference(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """(unit vector from the mean of y = 0 to the mean of y = 1, the 5-fold cross-validated balanced accuracy
    of the boundary across it: a threshold along the direction, both fitted on the training folds only)."""
    def direction(rows):
        d = x[rows][y[rows] == 1].mean(0) - x[rows][y[rows] == 0].mean(0)
        return d / np.linalg.norm(d)

    scores = []
    for train, test in folds(y, seed).split(x, y):
        d = direction(train)
        threshold = LogisticRegression(class_weight="balanced").fit((x[train] @ d)[:, None], y[train])
        scores.append(balanced_accuracy_score(y[test], threshold.predict((x[test] @ d)[:, None])))
    return direction(np.arange(len(y))), float(np.mean(scores))


def examples(r: Renderer, fit: LabelledFaces, classifier: AttributeClassifier | None, seed: int,
             gan_samples: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{attribute: (latents x, labels y, the latents its scale is measured on)}."""
    if classifier is None:  # an AE/VAE: the encoder's latent means of the labelled faces
        z = torch.cat([r.embed(chunk) for chunk in fit.faces.split(256)]).numpy()
        out = {}
        for j, name in enumerate(fit.names):
            known = (fit.labels[:, j] != 0).numpy()
            out[name] = z[known], (fit.labels[known, j] > 0).numpy().astype(int), z
        return out
    z = r.ckpt.sample_latents(gan_samples, torch.Generator().manual_seed(seed))
    p = torch.cat([classifier.probabilities(from_uint8(r.decode(chunk)), autocast=r.autocast)
                   for chunk in z.split(500)]).numpy()
    k = int(GAN_PICK * gan_samples)
    out = {}
    for j, name in enumerate(fit.names):
        order = np.argsort(p[:, j])
        pick = np.concatenate([order[:k], order[-k:]])
        out[name] = z.numpy()[pick], np.r_[np.zeros(k, int), np.ones(k, int)], z.numpy()
    return out


def balanced_accuracy(p: torch.Tensor, labels: torch.Tensor) -> list[float | None]:
    """Per attribute: the balanced accuracy of P > 0.5 against the +1/-1 labels (None without both kinds)."""
    out = []
    for j in range(labels.shape[1]):
        pos, neg = labels[:, j] > 0, labels[:, j] < 0
        if not pos.any() or not neg.any():
            out.append(None)
            continue
        out.append(0.5 * float((p[pos, j] > 0.5).float().mean() + (p[neg, j] <= 0.5).float().mean()))
    return out


def fit_directions(r: Renderer, fit: LabelledFaces, classifier: AttributeClassifier | None = None, seed: int = 0,
                   gan_samples: int = GAN_SAMPLES, held_out: LabelledFaces | None = None) -> tuple[AttributeDirections, dict[str, dict]]:
    """(the reliable directions, a report of every attribute: accuracy, n, positives, published). A GAN's
    `classifier` is scored on `held_out` real faces, and its accuracy caps the boundary's."""
    published, report = [], {}
    recognised = {}
    if classifier is not None and held_out is not None:
        p = classifier.probabilities(held_out.faces, autocast=r.autocast)
        recognised = dict(zip(held_out.names, balanced_accuracy(p, held_out.labels)))
    for name, (x, y, spread) in examples(r, fit, classifier, seed, gan_samples).items():
        positives, n = int(y.sum()), len(y)
        entry = {"n": n, "positives": positives, "accuracy": None, "published": False}
        report[name] = entry
        if min(positives, n - positives) < MIN_PER_CLASS:
            entry["why_not"] = f"fewer than {MIN_PER_CLASS} faces on one side"
            continue
        direction, accuracy = fit_boundary(x, y, seed)
        if classifier is None:  # AE/VAE: the boundary says the latents know the attribute; the mean difference edits it
            direction, threshold_accuracy = fit_mean_difference(x, y, seed)
            entry["threshold_accuracy"] = round(threshold_accuracy, 4)
        if recognised:  # a GAN's: the classifier that labelled its samples must also know real faces
            entry["boundary_accuracy"], entry["classifier_accuracy"] = round(accuracy, 4), recognised.get(name)
            accuracy = min(accuracy, recognised.get(name) or 0.0)
        entry["accuracy"] = round(accuracy, 4)
        if accuracy < MIN_ACCURACY:
            entry["why_not"] = f"balanced accuracy below {MIN_ACCURACY}"
            continue
        scale = float((spread @ direction).std())
        published.append(AttributeDirection(name, torch.from_numpy(direction).float(), scale, accuracy, n))
        entry["published"] = True
    return AttributeDirections(published), report


@torch.no_grad()
def rate_edits(r: Renderer, directions: AttributeDirections, rater: AttributeClassifier, names: list[str],
               n_faces: int = 32, steps: int = 5, span: float = 3.0, seed: int = 0) -> dict[str, dict]:
    """How each edit does by an independent classifier, on the faces /sample?seed=SEED&n=N_FACES shows:
    the share of faces whose P(attribute) rises from -span to +span, the mean rise, and the mean
    change of P(Male) between the same two ends (also with Male held, for the other attributes)."""
    z = r.ckpt.sample_latents(n_faces, torch.Generator().manual_seed(seed))
    male = names.index("Male") if "Male" in names else None
    out = {}
    for name in directions.names:
        j = names.index(name)
        rows = {}
        for hold in ([], ["Male"]) if male is not None and name != "Male" and "Male" in directions else ([],):
            zs = directions.edit(z, name, edit_offsets(span, steps), hold).reshape(-1, z.shape[1])
            p = rater.probabilities(from_uint8(r.decode(zs)), autocast=r.autocast).reshape(n_faces, steps, -1)
            rise = p[:, -1, j] - p[:, 0, j]
            entry = {"rises": round(float((rise > 0).float().mean()), 3), "mean_rise": round(float(rise.mean()), 3)}
            if male is not None and name != "Male":
                entry["male_moves"] = round(float((p[:, -1, male] - p[:, 0, male]).abs().mean()), 3)
            rows["holding_male" if hold else "plain"] = entry
        out[name] = rows
    return out


def random_directions(r: Renderer, directions: AttributeDirections, hold: list[str], count: int = 6,
                      seed: int = 0, samples: int = 4000) -> AttributeDirections:
    """`count` random unit directions with `hold`'s projected out, each scaled by the spread of the model's
    sampled latents along it: edits as large as an attribute's that mean nothing, a baseline for how
    much any edit of that size moves the held attributes."""
    g = torch.Generator().manual_seed(seed)
    spread = r.ckpt.sample_latents(samples, g)
    out = []
    for k in range(count):
        d = torch.randn(spread.shape[1], generator=g)
        held = AttributeDirections([*(directions[h] for h in hold), AttributeDirection("random", d, 1.0, 0.0, 0)])
        d = held.conditioned("random", hold)
        out.append(AttributeDirection(f"random{k}", d, float((spread @ d).std()), 0.0, 0))
    return AttributeDirections(out)


@torch.no_grad()
def male_moves_at_random(r: Renderer, directions: AttributeDirections, rater: AttributeClassifier, names: list[str],
                         n_faces: int = 32, span: float = 3.0, count: int = 6, seed: int = 0) -> float | None:
    """The mean |change of P(Male)| between -span and +span along random directions with Male held, on the
    faces rate_edits uses: what Smiling's figure holding Male compares with (None without a Male direction)."""
    if "Male" not in directions or "Male" not in names:
        return None
    z = r.ckpt.sample_latents(n_faces, torch.Generator().manual_seed(seed))
    male, moves = names.index("Male"), []
    randoms = random_directions(r, directions, ["Male"], count, seed)
    for name in randoms.names:
        zs = randoms.edit(z, name, torch.tensor([-span, span])).reshape(-1, z.shape[1])
        p = rater.probabilities(from_uint8(r.decode(zs)), autocast=r.autocast)[:, male].reshape(n_faces, 2)
        moves.append(float((p[:, 1] - p[:, 0]).abs().mean()))
    return round(float(np.mean(moves)), 3)


DESCRIPTION = """\
Fit attribute directions (Smiling, Male, Blond_Hair, ...) for a published version and publish them
with it as the store's next version (same weights, the directions added), which the service then
offers at /attributes and /edit. Needs a dataset prepared with CelebA's list_attr_celeba.txt;
only its labelled training faces are used, in two halves: one fits the directions, the other
trains the classifier that rates the edits.

  python -m trainer directions --model vae --data data/celeba64
"""


def table(report: dict[str, dict], ratings: dict[str, dict]) -> str:
    lines = [f"{'attribute':<20} {'n':>6} {'pos':>5} {'accuracy':>8}  edit: rises  mean rise  P(Male) moves (holding Male)"]
    for name, e in report.items():
        acc = f"{e['accuracy']:.3f}" if e["accuracy"] is not None else "-"
        line = f"{name:<20} {e['n']:>6} {e['positives']:>5} {acc:>8}"
        r = ratings.get(name)
        if r:
            p, held = r["plain"], r.get("holding_male", {})
            moves = f"{p['male_moves']:.3f}" if "male_moves" in p else "-"
            moves += f" ({held['male_moves']:.3f})" if held else ""
            line += f"  {p['rises']:>11.0%}  {p['mean_rise']:>9.3f}  {moves}"
        elif not e["published"]:
            line += f"  not published: {e.get('why_not')}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import argparse
    import sys
    from pathlib import Path

    from models_core.checkpoint import CheckpointError, CheckpointStore
    from models_core.precision import choose_precision
    from trainer.config import TRAINING_STORE_HELP, training_store
    from trainer.sources import SourceError

    p = argparse.ArgumentParser(prog="python -m trainer directions", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, nargs="+", help="model names in the checkpoint store (several share the "
                   "classifiers, and their edits are rated by the same one)")
    p.add_argument("--data", type=Path, required=True, help="prepared dataset with attribute labels (prepare-data)")
    p.add_argument("--version", type=int, help="version to fit directions for (default: latest; one model only)")
    p.add_argument("--checkpoints", type=Path, default=training_store(), help=TRAINING_STORE_HELP)
    p.add_argument("--gan-samples", type=int, default=GAN_SAMPLES, help="GAN: samples G(z) labelled by the classifier "
                   "(default: %(default)s)")
    p.add_argument("--classifier-epochs", type=int, default=40, help="epochs of each attribute classifier (default: %(default)s)")
    p.add_argument("--span", type=float, default=3.0, help="edits rated from -span to +span (default: %(default)s)")
    p.add_argument("--max-faces", type=int, default=20_000, help="at most this many labelled training faces, the first "
                   "in the dataset's order (default: %(default)s; they are held in memory as float32, 48 kB each)")
    p.add_argument("--seed", type=int, default=0, help="seed of the halves, samples and classifiers (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="fit and report, publish nothing")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = p.parse_args(argv)
    if args.gan_samples < 100:
        p.error("--gan-samples must be at least 100")
    if args.classifier_epochs < 1 or args.span <= 0 or args.max_faces < 2:
        p.error("--classifier-epochs must be >= 1, --span > 0 and --max-faces >= 2")

    if args.version is not None and len(args.model) > 1:
        p.error("--version names the version of one model; give one --model with it")
    store = CheckpointStore(args.checkpoints)
    try:
        ckpts = [store.load(name, args.version) for name in args.model]
        labelled = labelled_training_faces(PackedFaces.open(args.data), args.max_faces)
    except (CheckpointError, SourceError, NoLabels) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    device = torch.device("cpu")
    precision = choose_precision("auto", device)
    fit, rate = labelled.half(0, args.seed), labelled.half(1, args.seed)
    print(f"{len(labelled.faces)} labelled training faces: {len(fit.faces)} to fit the directions, {len(rate.faces)} "
          f"to train the classifier that rates the edits")

    def classifier(faces: LabelledFaces, seed: int) -> AttributeClassifier:
        return train_classifier(faces.faces, faces.labels, args.classifier_epochs, seed=seed, progress=args.progress,
                                autocast=precision.autocast(device))

    labeller = rater = None
    failed = 0
    for ckpt in ckpts:
        m = ckpt.manifest
        r = Renderer(ckpt, device, precision)
        gan = not ckpt.kind.has_encoder
        if gan and labeller is None:
            labeller = classifier(fit, args.seed)
        directions, report = fit_directions(r, fit, labeller if gan else None, args.seed, args.gan_samples,
                                            held_out=rate if gan else None)
        rater = rater or classifier(rate, args.seed + 1)
        ratings = rate_edits(r, directions, rater, labelled.names, span=args.span, seed=args.seed)
        for name, rows in ratings.items():
            report[name]["edit"] = rows
        baseline = male_moves_at_random(r, directions, rater, labelled.names, span=args.span, seed=args.seed)
        print(f"\n{m.name} v{m.version} ({m.kind}):")
        print(table(report, ratings))
        if baseline is not None:
            print(f"P(Male) moves along random directions of the same size, holding Male: {baseline:.3f} (the baseline "
                  "for the figures in brackets)")
        print(f"{len(directions)} of {len(report)} attributes reliable (balanced accuracy >= {MIN_ACCURACY}): "
              f"{', '.join(directions.names) or 'none'}")
        if not len(directions):
            failed += 1
            continue
        if args.dry_run:
            continue
        extras = {k: v for k, v in ckpt.extras.items() if not k.startswith("attribute.")} | directions.to_tensors()
        metrics = m.metrics | {"attributes": {"fitted_on": f"{len(fit.faces)} labelled training faces of {args.data}",
                                              "span": args.span, "by_attribute": report,
                                              "random_male_moves": baseline}}
        version = store.copy_from(store, m.name, m.version, extras=extras, metrics=metrics)
        print(f"published {m.name} v{version}: v{m.version}'s weights with {len(directions)} attribute directions")
    return 1 if failed else 0
