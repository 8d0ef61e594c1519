"""An encoder for a published GAN (python -m trainer gan-encoder): projections start from E(x).

E is trained for one frozen generator (in-domain GAN inversion, Zhu et al. 2020) on two losses:
- latent regression on G's own samples: |E(G(z)) - z|², where the answer is known;
- real training faces through G: the pixel error of G(E(x)) plus the distance of D's features,
  the loss /project minimises, so E lands where projection would go.
It is published with the generator's weight bytes as the model's next version.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models_core.dcgan import ENCODER_PREFIX, GanEncoder, module_extras
from models_core.images import from_uint8, psnr
from models_core.precision import PRECISIONS
from models_core.projection import feature_distance
from trainer.data import FaceBatches

LATENT, PIXEL, FEATURES = 1.0, 1.0, 0.5  # loss weights


def encoder_losses(E: GanEncoder, G, D, x: torch.Tensor, autocast) -> dict[str, torch.Tensor]:
    """The three losses on a batch of real faces x (and as many samples of G)."""
    z = torch.randn(len(x), G.latent_dim, device=x.device)
    with torch.no_grad(), autocast():
        fake = G.decode(z).float()
    with autocast():
        latent = F.mse_loss(E(fake).float(), z)
        recon = G.decode(E(x)).float()
        pixel = F.mse_loss(recon, x)
        features = feature_distance(D.features(recon), D.features(x)).mean() if D is not None else torch.zeros((), device=x.device)
    return {"latent": latent, "pixel": pixel, "features": features.float()}


@torch.no_grad()
def recalibrate_batchnorm(E: GanEncoder, batches: FaceBatches, n_batches: int = 50) -> None:
    """BatchNorm's running statistics from real faces alone. In training E saw G's samples and real
    faces in separate batches, each normalised by its own statistics, but the running averages blend
    both; at serving time E sees only real faces."""
    bns = [m for m in E.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the batches below
    E.train()
    for i, x in enumerate(batches.epoch(10**6)):
        if i == n_batches:
            break
        E(x)
    for bn in bns:
        bn.momentum = 0.1
    E.eval()


@torch.no_grad()
def encoder_psnr(E: GanEncoder, G, faces: torch.Tensor, autocast) -> float:
    """Mean PSNR (dB) of G(E(x)) against (N, 3, H, W) faces in [-1, 1]."""
    was = E.training
    E.eval()
    values = []
    for chunk in faces.split(256):
        with autocast():
            values.append(psnr(G.decode(E(chunk)).float(), chunk))
    E.train(was)
    return float(torch.cat(values).mean())


def train_encoder(G, D, train: torch.Tensor, held_out: torch.Tensor, device: torch.device, autocast, minutes: float,
                  max_steps: int | None = None, batch_size: int = 64, lr: float = 1e-4, seed: int = 0, progress: bool = True,
                  log=print, start: GanEncoder | None = None) -> tuple[GanEncoder, dict]:
    """E for the frozen G (and D's features), trained on (N, H, W, 3) uint8 `train` faces until `minutes`
    or `max_steps`, from `start`'s weights where given; Ctrl-C ends training early and keeps what was
    learnt. Returns E and a report."""
    torch.manual_seed(seed)
    G, D = G.to(device).eval().requires_grad_(False), D.to(device).eval().requires_grad_(False) if D is not None else None
    E = GanEncoder(G.cfg)
    if start is not None:
        E.load_state_dict(start.state_dict())
    E = E.to(device).train()
    opt = torch.optim.Adam(E.parameters(), lr=lr, betas=(0.9, 0.999))
    batches = FaceBatches(train.to(device), batch_size, seed)
    held_out = held_out.to(device)
    deadline = time.monotonic() + 60 * minutes
    step, epoch, stopped = 0, 0, "time limit"
    bar = tqdm(total=max_steps, desc="encoder", unit="step", disable=not progress)
    start = time.monotonic()
    try:
        while True:
            for x in batches.epoch(epoch):
                losses = encoder_losses(E, G, D, x, autocast)
                loss = LATENT * losses["latent"] + PIXEL * losses["pixel"] + FEATURES * losses["features"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                bar.update()
                if step % 200 == 0:
                    bar.set_postfix({k: f"{v.item():.4f}" for k, v in losses.items()})
                if step % 1000 == 0:
                    log(f"step {step}: " + ", ".join(f"{k} {v.item():.4f}" for k, v in losses.items())
                        + f", held-out PSNR {encoder_psnr(E, G, held_out, autocast):.2f} dB")
                if time.monotonic() >= deadline or (max_steps and step >= max_steps):
                    raise StopIteration
            epoch += 1
    except StopIteration:
        stopped = "step limit" if max_steps and step >= max_steps else "time limit"
    except KeyboardInterrupt:
        stopped = "interrupted"
    bar.close()
    recalibrate_batchnorm(E, batches)
    seconds = time.monotonic() - start
    report = {"steps": step, "epochs": round(step * batch_size / len(train), 2), "batch_size": batch_size, "lr": lr,
              "seconds": round(seconds, 1), "stopped_by": stopped,
              "held_out_psnr_db": round(encoder_psnr(E, G, held_out, autocast), 3)}
    return E.eval(), report


DESCRIPTION = """\
Train an encoder E for a published GAN's generator and publish it with the generator as the
model's next version (the same weight bytes, E added to its extras). The service then starts
every projection (/project, a GAN's /reconstruct, upload interpolation and /edit) from E(x) and
refines it from there; projection_steps=0 returns E(x) alone.

  python -m trainer gan-encoder --model gan --data data/celeba64 --minutes 30
"""


def main(argv: list[str]) -> int:
    from models_core.checkpoint import WEIGHT_DTYPES, CheckpointError, CheckpointStore
    from models_core.kinds import network_differences
    from models_core.precision import choose_precision
    from trainer.config import TRAINING_STORE_HELP, training_store
    from trainer.data import PackedFaces
    from trainer.distributed import Dist
    from trainer.loop import TrainingError, pick_device
    from trainer.sources import SourceError

    p = argparse.ArgumentParser(prog="python -m trainer gan-encoder", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="GAN model name in the checkpoint store")
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (its train split trains E; 512 held-out "
                   "faces score it)")
    p.add_argument("--version", type=int, help="version whose generator E is for (default: latest)")
    p.add_argument("--checkpoints", type=Path, default=training_store(), help=TRAINING_STORE_HELP)
    p.add_argument("--minutes", type=float, default=30.0, help="training time (default: %(default)s); Ctrl-C stops "
                   "early and still publishes")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--init-from", type=Path, metavar="VERSION_DIR",
                   help="start E from the encoder published with that version (e.g. checkpoints/gan/000006): "
                        "the version's own, to train it on, or an earlier generator's after that GAN was trained on "
                        "(default: from scratch)")
    p.add_argument("--batch-size", type=int, default=64, help="real faces (and as many samples) per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.batch_size < 1 or (args.max_steps is not None and args.max_steps < 1):
        p.error("--minutes must be > 0, --batch-size and --max-steps >= 1")

    store = CheckpointStore(args.checkpoints)
    try:
        ckpt = store.load(args.model, args.version)
        start = CheckpointStore.load_folder(args.init_from) if args.init_from else None
        data = PackedFaces.open(args.data)
        device = pick_device(args.device, Dist())
    except (CheckpointError, SourceError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    m = ckpt.manifest
    if m.kind != "gan":
        print(f"error: {args.model} is a {m.kind}, not a GAN: it has an encoder of its own", file=sys.stderr)
        return 1
    if start is not None and start.encoder is None:
        print(f"error: --init-from {args.init_from} has no encoder to start from", file=sys.stderr)
        return 1
    if start is not None and network_differences(start.manifest.config, m.config):
        print(f"error: --init-from {args.init_from} is an encoder for another network than {args.model} v{m.version}'s",
              file=sys.stderr)
        return 1
    precision = choose_precision(args.precision, device)
    held_out = from_uint8(data.tensor(data.held_out(), limit=512)).permute(0, 3, 1, 2).contiguous()
    train = data.tensor("train")
    print(f"{args.model} v{m.version}: training an encoder on {len(train)} faces on {device} in {precision.name} "
          f"for up to {args.minutes:g} min" + ("" if ckpt.discriminator is not None else " (no discriminator: pixel loss only)")
          + (f", starting from {start.manifest.name} v{start.manifest.version}'s encoder" if start else ""))
    E, report = train_encoder(ckpt.model, ckpt.discriminator, train, held_out, device, precision.autocast(device),
                              args.minutes, args.max_steps, args.batch_size, args.lr, args.seed, args.progress,
                              start=start.encoder if start else None)
    if start is not None:
        report["init_from"] = str(start.path.resolve())
    print(f"stopped by the {report['stopped_by']} after {report['steps']} steps ({report['epochs']} epochs, "
          f"{report['seconds']:.0f} s): G(E(x)) on {len(held_out)} held-out faces {report['held_out_psnr_db']:.2f} dB")
    dtype = WEIGHT_DTYPES.get(m.weights_dtype)
    extras = {k: v for k, v in ckpt.extras.items() if not k.startswith(ENCODER_PREFIX)}
    extras |= module_extras(ENCODER_PREFIX, E.cpu().state_dict(), dtype if dtype != torch.float32 else None)
    version = store.copy_from(store, args.model, m.version, extras=extras, metrics=m.metrics | {"encoder": report})
    print(f"published {args.model} v{version}: v{m.version}'s generator with its encoder")
    return 0
