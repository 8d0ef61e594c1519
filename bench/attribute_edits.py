"""How attribute edits do at each span, by classifiers that had no part in making the directions.

    python bench/attribute_edits.py --data DIR_WITH_LABELS [--checkpoints checkpoints] [--spans 2 3 4 5]
                                    [--rater-seeds 1 2 3]

For every model under the root whose latest version has attribute directions: the share of 32
sampled faces (those of /sample?seed=0&n=32) whose P(attribute) rises from -span to +span, the
mean rise, and the mean change of P(Male) while Smiling is edited, plainly and holding Male, and
along random directions of the same size holding Male (what any edit that large does to P(Male)).

Raters are CNNs trained on the half of the labelled training faces that `python -m trainer
directions` rates with; two of them, trained with different seeds, disagree on a face's change of
P(Male) by 0.12-0.18 on average, so each figure is the mean over --rater-seeds (the spread of
the P(Male) figures over the raters is printed beside them). Seed 1 alone is the rater the
directions command prints with (its --seed 0).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.hardware import describe  # noqa: E402
from models_core.checkpoint import CheckpointStore  # noqa: E402
from models_core.figures import Renderer  # noqa: E402
from models_core.precision import choose_precision  # noqa: E402
from trainer.attribute_classifier import train_classifier  # noqa: E402
from trainer.data import PackedFaces  # noqa: E402
from trainer.directions import RATED, labelled_training_faces, male_moves_at_random, rate_edits  # noqa: E402


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ±{(max(values) - min(values)) / 2:.3f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--spans", type=float, nargs="+", default=[2.0, 3.0, 4.0, 5.0])
    p.add_argument("--seed", type=int, default=0, help="seed of the halves and the sampled faces (default: %(default)s)")
    p.add_argument("--rater-seeds", type=int, nargs="+", default=[1, 2, 3],
                   help="one rating CNN per seed, figures averaged (default: %(default)s)")
    args = p.parse_args()
    device = torch.device("cpu")
    print(describe(device))
    precision = choose_precision("auto", device)
    labelled = labelled_training_faces(PackedFaces.open(args.data))
    rate = labelled.half(1, args.seed)
    raters = [train_classifier(rate.faces, rate.labels, 40, seed=s, autocast=precision.autocast(device))
              for s in args.rater_seeds]
    store = CheckpointStore(args.checkpoints)
    print(f"precision {precision.name}; {len(raters)} raters (seeds {args.rater_seeds}) trained on {len(rate.faces)} "
          "labelled faces; rises and mean rises averaged over them, P(Male) figures: mean ± half their range")
    print(f"{'model':<6} {'span':>4}  " + "  ".join(f"{a[:10]:>15}" for a in RATED)
          + f"  {'Smiling: P(Male) moves':>22} {'holding Male':>13} {'random, holding':>15}")
    for name in store.models():
        ckpt = store.load(name)
        if not len(ckpt.attributes):
            continue
        r = Renderer(ckpt, device, precision)
        for span in args.spans:
            ratings = [rate_edits(r, ckpt.attributes, rater, labelled.names, span=span, seed=args.seed) for rater in raters]
            cells = []
            for a in RATED:
                rows = [x[a]["plain"] for x in ratings if a in x]
                cells.append(f"{np.mean([e['rises'] for e in rows]):>6.0%} {np.mean([e['mean_rise'] for e in rows]):>+6.3f}  "
                             if rows else f"{'not published':>15}")
            smile = [x.get("Smiling", {}) for x in ratings]
            plain = spread([x["plain"]["male_moves"] for x in smile]) if all("plain" in x for x in smile) else "-"
            held = spread([x["holding_male"]["male_moves"] for x in smile]) if all("holding_male" in x for x in smile) else "-"
            random = [male_moves_at_random(r, ckpt.attributes, rater, labelled.names, span=span, seed=args.seed)
                      for rater in raters]
            random = spread(random) if None not in random else "-"
            print(f"{name:<6} {span:>4g}  " + "  ".join(cells) + f"  {plain:>22} {held:>13} {random:>15}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
