"""Sample a grid of faces from a published model: `python -m models_core.demo --help`."""

import argparse
from pathlib import Path

import torch

from models_core.checkpoint import CheckpointError, CheckpointStore
from models_core.images import encode_png, image_grid
from models_core.latent import sample_prior


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="checkpoint root (default: %(default)s)")
    parser.add_argument("--model", default="gan", help="model name under the root (default: %(default)s)")
    parser.add_argument("--version", type=int, default=None, help="version to load (default: latest)")
    parser.add_argument("-n", type=int, default=64, help="number of faces (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the latents (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("out/samples.png"), help="PNG to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 1024:
        parser.error("-n must be between 1 and 1024")

    try:
        ckpt = CheckpointStore(args.checkpoints).load(args.model, args.version)
    except CheckpointError as e:
        parser.exit(1, f"error: {e}\nTrain a model first (python -m trainer --help) or point --checkpoints at a root.\n")
    with torch.inference_mode():
        z = sample_prior(args.n, ckpt.model.latent_dim, torch.Generator().manual_seed(args.seed))
        images = ckpt.model.decode(z)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(encode_png(image_grid(images, nrow=int(args.n**0.5 + 0.999))))
    m = ckpt.manifest
    print(f"wrote {args.n} samples of {m.name} v{m.version} ({m.kind}, step {m.step}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
