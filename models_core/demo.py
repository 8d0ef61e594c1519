"""Images from published models, without the service.

    python -m models_core.demo [--model gan] [-n 64] [--out out/samples.png]   the grid /sample returns
    python -m models_core.demo figures --out docs/figures                     the study's figures

`figures` writes, for every model under the checkpoint root: samples, reconstructions of held-out
faces (a GAN's by projection), lerp vs slerp paths, a PCA grid and a latent-dimension grid; and,
where both an `ae` and a `vae` are there, the study's AE-vs-VAE latent grid side by side. The
latents are those the service builds for the same views, decoded in the same precision.
"""

import argparse
import sys
from pathlib import Path

import torch

from models_core import views
from models_core.checkpoint import PRIORS, CheckpointError, CheckpointStore
from models_core.images import encode_png, held_out_faces, image_grid, square_nrow
from models_core.precision import PRECISIONS, choose_precision
from models_core.projection import DEFAULT_STEPS_FROM_ENCODER

NO_MODEL_HINT = "Train a model first (python -m trainer --help) or point --checkpoints at a root."


def sample_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m models_core.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="checkpoint root (default: %(default)s)")
    parser.add_argument("--model", default="gan", help="model name under the root (default: %(default)s)")
    parser.add_argument("--version", type=int, default=None, help="version to load (default: latest)")
    parser.add_argument("-n", type=int, default=64, help="number of faces (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the latents (default: %(default)s)")
    parser.add_argument("--prior", choices=PRIORS, default="auto", help="standard N(0, I), fitted (AE/VAE) or auto "
                        "(fitted for AE/VAE, standard for the GAN; default), as /sample takes it")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default): bf16 where the chip has native bf16, fp32 elsewhere, as the service chooses")
    parser.add_argument("--out", type=Path, default=Path("out/samples.png"), help="PNG to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 1024:
        parser.error("-n must be between 1 and 1024")

    from models_core.figures import Renderer

    try:
        ckpt = CheckpointStore(args.checkpoints).load(args.model, args.version)
        z = views.prior_latents(ckpt, args.n, args.seed, prior=args.prior)
    except (CheckpointError, ValueError) as e:
        parser.exit(1, f"error: {e}\n{NO_MODEL_HINT if isinstance(e, CheckpointError) else ''}\n")
    device = torch.device("cpu")
    # The service's latents, network copy and precision: the bytes of /sample?model=M&n=N&seed=S.
    images = Renderer(ckpt, device, choose_precision(args.precision, device)).decode(z)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(encode_png(image_grid(images, nrow=square_nrow(args.n))))
    m = ckpt.manifest
    print(f"wrote {args.n} samples of {m.name} v{m.version} ({m.kind}, step {m.step}) to {args.out}")
    return 0


def figures_main(argv: list[str]) -> int:
    from models_core.figures import Renderer, write_figures

    parser = argparse.ArgumentParser(prog="python -m models_core.demo figures",
                                     description="Write the study's figures for every model under a checkpoint root.")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="checkpoint root (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs (created if missing)")
    parser.add_argument("--models", nargs="+", help="model names (default: every model under the root)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default): bf16 where the chip has native bf16, fp32 elsewhere, as the service chooses")
    parser.add_argument("--projection-steps", type=int, default=None,
                        help="Adam steps per projection for a GAN's reconstructions (default: the service's, 200 from "
                             f"random starts or {DEFAULT_STEPS_FROM_ENCODER} from the version's encoder)")
    args = parser.parse_args(argv)
    if args.projection_steps is not None and not 1 <= args.projection_steps <= 5000:
        parser.error("--projection-steps must be between 1 and 5000")

    store = CheckpointStore(args.checkpoints)
    names = args.models or store.models()
    if not names:
        parser.exit(1, f"error: no models under {args.checkpoints}\n{NO_MODEL_HINT}\n")
    device = torch.device(args.device)
    precision = choose_precision(args.precision, device)
    renderers = {}
    for name in names:
        try:
            ckpt = store.load(name, device=device)
        except CheckpointError as e:
            parser.exit(1, f"error: {e}\n{NO_MODEL_HINT}\n")
        renderers[name] = Renderer(ckpt, device, precision)
        print(f"{name} v{ckpt.manifest.version} ({ckpt.manifest.kind}), {precision.name}: {precision.reason}", flush=True)
    written = write_figures(renderers, held_out_faces(), args.out, args.projection_steps, progress=lambda m: print(m, flush=True))
    print(f"wrote {len(written)} figures to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["figures"]:
        return figures_main(argv[1:])
    return sample_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
