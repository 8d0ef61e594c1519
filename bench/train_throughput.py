"""Training throughput (img/s): the trainer's step vs a reference loop written the way the seed trains.

    python bench/train_throughput.py --zip ../shared/data/celeba-20k/img_align_celeba.zip \
        --data DIR_FROM_PREPARE_DATA [--preset seed] [--steps 10] [--models ae vae gan]

Reference: fp32 (as the seed trains), contiguous tensors, a DataLoader decoding JPEGs from the zip with per-step
torchvision transforms (2 workers), the seed's probability-space GAN losses, and D's weight
gradients computed during the G step. Ours: the packed uint8 set in memory (on the device),
channels_last, logits losses, D frozen for the G step, the trainer's precision (auto: bf16 where
the chip has native bf16); same architecture and batch size.
"""

import argparse
import time
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from models_core.dcgan import Discriminator, Generator
from models_core.losses import vae_loss
from models_core.precision import PRECISIONS, choose_precision
from models_core.kinds import build_model
from trainer.config import TrainConfig
from trainer.data import FaceBatches, PackedFaces
from trainer.tasks import make_task

from hardware import describe


class ZipFaces(Dataset):
    """Seed-style dataset: decode a JPEG and transform it on every access."""

    def __init__(self, zip_path: Path):
        self.zip_path, self.zf = zip_path, None
        with zipfile.ZipFile(zip_path) as zf:
            self.names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
        self.transform = transforms.Compose([
            transforms.Resize(64), transforms.CenterCrop(64), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3),
        ])

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        if self.zf is None:
            self.zf = zipfile.ZipFile(self.zip_path)
        return self.transform(Image.open(self.zf.open(self.names[i])).convert("RGB")), 0


def reference_steps(model: str, cfg, zip_path: Path, batch: int, steps: int, device) -> float:
    torch.manual_seed(0)
    loader = DataLoader(ZipFaces(zip_path), batch_size=batch, shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)
    if model == "gan":
        G, D = Generator(cfg).to(device), Discriminator(cfg).to(device)
        opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))

        def step(x):
            fake = G(torch.randn(x.shape[0], cfg.latent_dim, device=device))
            opt_D.zero_grad()
            d_x, d_g_z = torch.sigmoid(D(x)), torch.sigmoid(D(fake.detach()))
            loss_D = -(torch.log(d_x + 1e-8).mean() + torch.log(1 - d_g_z + 1e-8).mean())
            loss_D.backward()
            nn.utils.clip_grad_norm_(D.parameters(), 1.0)
            opt_D.step()
            opt_G.zero_grad()
            loss_G = -torch.log(torch.sigmoid(D(fake)) + 1e-8).mean()
            loss_G.backward()
            nn.utils.clip_grad_norm_(G.parameters(), 1.0)
            opt_G.step()
    else:
        net = build_model(model, cfg).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=5e-4)

        def step(x):
            opt.zero_grad()
            if model == "vae":
                recon, mu, logvar = net(x)
                loss = vae_loss(x, recon, mu, logvar).total
            else:
                loss = F.mse_loss(net(x), x)
            loss.backward()
            opt.step()

    return timed(step, (x.to(device) for x, _ in loader), batch, steps, device)


def our_steps(model: str, preset: str, data: PackedFaces, batch: int, steps: int, device, precision) -> float:
    torch.manual_seed(0)
    cfg = TrainConfig(model=model, data=data.root, preset=preset, batch_size=batch)
    task = make_task(cfg, device, precision.autocast(device))
    batches = FaceBatches(data.tensor("train", device), batch)
    return timed(task.train_step, batches.epoch(0), batch, steps, device)


def timed(step, batches, batch: int, steps: int, device, warmup: int = 2) -> float:
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    sync()
    return steps * batch / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zip", type=Path, required=True, help="img_align_celeba.zip for the reference loader")
    p.add_argument("--data", type=Path, required=True, help="prepared dataset for our loop")
    p.add_argument("--preset", default="seed")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--models", nargs="+", default=["ae", "vae", "gan"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="ours (the reference stays fp32)")
    args = p.parse_args()
    device = torch.device(args.device)
    precision = choose_precision(args.precision, device)
    data = PackedFaces.open(args.data)
    print(describe(device))
    print(f"preset {args.preset}, {args.steps} timed steps; reference fp32, ours {precision.name} ({precision.reason})")
    print(f"{'model':6} {'batch':>5} {'reference img/s':>16} {'ours img/s':>11} {'speed-up':>9}")
    for model in args.models:
        cfg = TrainConfig(model=model, data=args.data, preset=args.preset)
        ref = reference_steps(model, cfg.network_config, args.zip, cfg.batch_size, args.steps, device)
        ours = our_steps(model, args.preset, data, cfg.batch_size, args.steps, device, precision)
        print(f"{model:6} {cfg.batch_size:5d} {ref:16.1f} {ours:11.1f} {ours / ref:8.2f}×", flush=True)


if __name__ == "__main__":
    main()
