"""python -m trainer prepare-data SOURCE --out DIR"""

import argparse
import sys
from pathlib import Path

from trainer.data import prepare_data
from trainer.sources import SourceError

DESCRIPTION = """\
Pack face images into a CelebA-64 dataset: one (N, 64, 64, 3) uint8 array (images.npy,
memory-mappable), split indices (splits.npz), names.txt and dataset.json (sha256 fingerprint,
counts, skipped files).

SOURCE may be: torchvision's layout (ROOT/celeba/img_align_celeba/ + list_eval_partition.txt),
the official img_align_celeba.zip or its unpacked img_align_celeba/ folder (partition file beside
it or in Eval/), or any folder or zip of face images. The official train/valid/test partition is
used when found, an 80/10/10 seeded split otherwise. CelebA's attribute labels
(list_attr_celeba.txt: beside the partition file, in celeba/ or in Anno/) are stored with the
faces when found (attributes.npz); a face the file has no row for is marked unknown.

Each face is the largest centred square (178×178 for CelebA's 178×218 aligned images), resized to
64×64 with Pillow's antialiased bicubic filter. Unreadable files are skipped and listed.
"""


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer prepare-data", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="CelebA download (folder or zip) or any folder of face images")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--size", type=int, default=64, help="output side in pixels (default: %(default)s)")
    p.add_argument("--partition", type=Path, help="list_eval_partition.txt, if not found beside the images")
    p.add_argument("--attributes", type=Path, help="list_attr_celeba.txt, if not found beside the images or in Anno/")
    p.add_argument("--seed", type=int, default=0, help="seed of the split when no partition file is used (default: %(default)s)")
    p.add_argument("--random-split", action="store_true", help="ignore any partition file: a seeded 80/10/10 split "
                   "(for a partial download whose partition puts every face in train)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all CPU cores)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (for quick runs)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = p.parse_args(argv)
    if args.size < 8:
        p.error("--size must be at least 8")
    try:
        report = prepare_data(args.source, args.out, size=args.size, workers=args.workers, seed=args.seed,
                              partition=args.partition, attributes=args.attributes, overwrite=args.overwrite, limit=args.limit,
                              progress=args.progress, random_split=args.random_split)
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    splits = ", ".join(f"{k} {v}" for k, v in report["splits"].items())
    print(f"packed {report['n_images']} faces ({splits}; {report['split_kind']} split) into {args.out}")
    if report["attributes"]:
        a = report["attributes"]
        print(f"attribute labels for {a['n_labelled']} faces ({', '.join(f'{k} {v}' for k, v in a['n_labelled_by_split'].items())}) "
              f"from {a['file']}")
    empty = [s for s in ("valid", "test") if not report["splits"][s]]
    if empty:
        print(f"warning: no {' and no '.join(empty)} faces. " + (
            "Nothing is held out: PCA bases will be fitted on training faces, and evaluate refuses to score "
            "training faces unless given --on-training-faces. " if len(empty) == 2 else
            f"Held-out work uses the {'test' if empty == ['valid'] else 'valid'} split alone. ") +
            ("The partition file puts every face in train; --random-split holds out 10% + 10% instead."
             if report["split_kind"] == "official" and len(empty) == 2 else ""), file=sys.stderr)
    if report["unlisted_in_partition"]:
        print(f"note: {report['unlisted_in_partition']} images were not in the partition file and went to train")
    if report["n_skipped"]:
        print(f"skipped {report['n_skipped']} unreadable files (listed in {args.out / 'dataset.json'}):")
        for s in report["skipped"][:10]:
            print(f"  {s['file']}: {s['error']}")
    print(f"fingerprint {report['fingerprint']}")
    return 0
