"""How attribute edits do at each span, by a classifier that had no part in making the directions.

    python bench/attribute_edits.py --data DIR_WITH_LABELS [--checkpoints checkpoints] [--spans 2 3 4 5]

For every model under the root whose latest version has attribute directions: the share of 32
sampled faces (those of /sample?seed=0&n=32) whose P(attribute) rises from -span to +span, the
mean rise, and the mean change of P(Male) while Smiling is edited, plainly and holding Male.
The rater is the one `python -m trainer directions` trains (same seed, same half of the labelled
training faces), so the numbers at span 3 are those it printed.
"""

import argparse
import sys
from pathlib import Path

import torch

from models_core.checkpoint import CheckpointStore
from models_core.figures import Renderer
from models_core.precision import choose_precision
from trainer.attribute_classifier import train_classifier
from trainer.data import PackedFaces
from trainer.directions import RATED, labelled_training_faces, rate_edits


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--spans", type=float, nargs="+", default=[2.0, 3.0, 4.0, 5.0])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = torch.device("cpu")
    precision = choose_precision("auto", device)
    labelled = labelled_training_faces(PackedFaces.open(args.data))
    rate = labelled.half(1, args.seed)
    rater = train_classifier(rate.faces, rate.labels, 40, seed=args.seed + 1, autocast=precision.autocast(device))
    store = CheckpointStore(args.checkpoints)
    print(f"precision {precision.name}; rater trained on {len(rate.faces)} labelled faces")
    print(f"{'model':<6} {'span':>4}  " + "  ".join(f"{a[:10]:>17}" for a in RATED) + "  Smiling: P(Male) moves (holding)")
    for name in store.models():
        ckpt = store.load(name)
        if not len(ckpt.attributes):
            continue
        r = Renderer(ckpt, device, precision)
        for span in args.spans:
            ratings = rate_edits(r, ckpt.attributes, rater, labelled.names, span=span, seed=args.seed)
            cells = []
            for a in RATED:
                e = ratings.get(a, {}).get("plain")
                cells.append(f"{e['rises']:>6.0%} {e['mean_rise']:>+6.3f}   " if e else f"{'not published':>17}")
            smile = ratings.get("Smiling", {})
            moves = (f"{smile['plain']['male_moves']:.3f} ({smile['holding_male']['male_moves']:.3f})"
                     if "holding_male" in smile else "-")
            print(f"{name:<6} {span:>4g}  " + "  ".join(cells) + f"  {moves}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
