"""GAN projection on held-out faces: PSNR reached, steps and seconds per face.

    python bench/projection.py [--checkpoints checkpoints] [--model gan] [--faces 16] [--steps 200]

Projects the first --faces of the 64 held-out CelebA test faces the project ships, one request's
worth (8) at a time as the service does, in the precision the service would choose, with and
without the discriminator's perceptual term, and, where the version has an encoder, from E(x)
(what the service does then) as well as from random starts. --steps 0 scores E(x) alone.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.hardware import describe  # noqa: E402
from models_core.checkpoint import CheckpointStore  # noqa: E402
from models_core.images import held_out_faces  # noqa: E402
from models_core.precision import choose_precision  # noqa: E402
from models_core.projection import ProjectionConfig, project  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--model", default="gan")
    p.add_argument("--version", type=int)
    p.add_argument("--faces", type=int, default=16)
    p.add_argument("--steps", type=int, nargs="+", default=[200])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    print(describe(device))
    ckpt = CheckpointStore(args.checkpoints).load(args.model, args.version, device=device)
    precision = choose_precision("auto", device)
    d = ckpt.discriminator
    print(f"{ckpt.manifest.name} v{ckpt.manifest.version} (epoch {ckpt.manifest.epoch}), {precision.name}, "
          f"discriminator shipped: {'yes' if d is not None else 'no'}")
    faces = held_out_faces()[: args.faces]
    e = ckpt.encoder.to(device) if ckpt.encoder is not None else None
    autocast = precision.autocast(device)
    print(f"{'start':<8} {'loss':<20} {'steps':>5} {'PSNR mean':>9} {'min':>6} {'max':>6} {'s/face':>7}")
    for steps in args.steps:
        for origin in (["E(x)"] if e is not None else []) + (["random"] if steps > 0 else []):
            for name, disc in (("pixel + D features", d), ("pixel only", None)):
                if name.startswith("pixel +") and d is None:
                    continue
                psnrs, start = [], time.perf_counter()
                for i in range(0, len(faces), 8):
                    batch = faces[i : i + 8].to(device)
                    z0 = None
                    if origin == "E(x)":
                        with torch.no_grad(), autocast():
                            z0 = e(batch).float()
                    cfg = ProjectionConfig(steps=steps, perceptual=1.0 if disc is not None else 0.0)
                    psnrs.append(project(ckpt.model, batch, cfg,
                                         disc.to(device) if disc is not None else None, autocast, start=z0)[2])
                seconds = (time.perf_counter() - start) / len(faces)
                q = torch.cat(psnrs)
                print(f"{origin:<8} {name:<20} {steps:>5} {q.mean():>9.2f} {q.min():>6.2f} {q.max():>6.2f} {seconds:>7.2f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
