"""python -m trainer promote: copy a verified version from one checkpoint store into another."""

import argparse
import sys
from pathlib import Path

from models_core.checkpoint import WEIGHT_DTYPES, CheckpointError, CheckpointStore, validate_model_name
from trainer.config import served_store, training_store

DESCRIPTION = """\
Copy a published version from the trainer's store into the store the service reads: the one step
by which a trained model goes live. The version is verified first, and lands as the destination's
next version, so a running service picks it up on its next poll. Step, epoch, data fingerprint,
metrics and provenance travel with it; the manifest records which store and version it came from.

  python -m trainer promote --model gan                                   # the latest, as 'gan'
  python -m trainer promote --model gansig --as gan --version 12 --dtype bfloat16
  python -m trainer promote --model vae --dtype int8   # weight-only int8: half bf16's bytes

int8 stores every convolution and linear weight (a GAN's discriminator and encoder too) as int8
with one scale per output channel and dequantises at load; the networks compute as before
(bench/int8.py measures the images' PSNR against the original's).
"""


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer promote", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model name in the source store")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="name in the destination store (default: the same)")
    p.add_argument("--from", dest="source", type=Path, default=training_store(),
                   help="source store (default: the trainer's, $FACEGEN_TRAIN_CHECKPOINTS or RUNS_DIR/checkpoints)")
    p.add_argument("--version", type=int, help="version to copy (default: the source's latest)")
    p.add_argument("--to", type=Path, default=served_store(),
                   help="destination store (default: the served one, $FACEGEN_CHECKPOINT_ROOT or checkpoints/)")
    p.add_argument("--dtype", choices=sorted(WEIGHT_DTYPES), help="store the weights in this dtype; int8: weight-only, per-channel scales "
                   "(default: keep the source's dtype)")
    args = p.parse_args(argv)
    if args.source.resolve() == args.to.resolve():
        p.error("--from and --to are the same store")
    try:
        if args.as_name:
            validate_model_name(args.as_name)
        source = CheckpointStore(args.source)
        version = source.resolve(args.model, args.version)
        promoted = CheckpointStore(args.to).copy_from(source, args.model, version, WEIGHT_DTYPES.get(args.dtype),
                                                      as_name=args.as_name)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    name = args.as_name or args.model
    print(f"promoted {args.model} v{version} from {args.source} to {args.to} as {name} v{promoted}")
    return 0
