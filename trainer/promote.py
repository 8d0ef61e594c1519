"""python -m trainer promote: copy a verified version from one checkpoint store into another."""

import argparse
import sys
from pathlib import Path

from models_core.checkpoint import WEIGHT_DTYPES, CheckpointError, CheckpointStore
from trainer.config import default_checkpoints

DESCRIPTION = """\
Copy a published version (a training run's store, say) into the store the service reads. The
version is verified first, and lands as the destination's next version, so a running service
picks it up on its next poll. Step, epoch, data fingerprint and metrics travel with it.

  python -m trainer promote --model gan --from /scratch/checkpoints --version 12 --dtype bfloat16
"""


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer promote", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model name in the source store")
    p.add_argument("--from", dest="source", type=Path, required=True, help="source checkpoint root")
    p.add_argument("--version", type=int, help="version to copy (default: the source's latest)")
    p.add_argument("--to", type=Path, default=default_checkpoints(),
                   help="destination checkpoint root (default: $FACEGEN_CHECKPOINT_ROOT or checkpoints/)")
    p.add_argument("--dtype", choices=sorted(WEIGHT_DTYPES), help="cast the weights (default: keep the source's dtype)")
    args = p.parse_args(argv)
    if args.source.resolve() == args.to.resolve():
        p.error("--from and --to are the same store")
    try:
        version = CheckpointStore(args.to).copy_from(
            CheckpointStore(args.source), args.model, args.version, WEIGHT_DTYPES.get(args.dtype))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"promoted {args.model} from {args.source} to {args.to} as version {version}")
    return 0
