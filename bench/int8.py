"""What weight-only int8 costs: each model's int8 copy against the version it was made from.

    python bench/int8.py [--checkpoints checkpoints] [--model gan ...] [--data DIR] [--fid-n 500]

For the latest version of every model under the root: the bytes of its files either way, and the
PSNR of the int8 copy's images against the original's, on the 64 held-out faces the service ships
(AE/VAE: reconstructions; GAN: G(z) for 64 fixed latents, and G(E(x)) where it has an encoder).
Both run in float32, so the figure is the rounding of the weights alone. With --data (a prepared
dataset with cached or computable Inception features): FID of N samples against N test faces,
from the original, from the int8 copy (the same latents) and from the original with other
latents: the last pair's gap is the sampling noise an int8 gap is to be read against.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from models_core.checkpoint import EXTRAS_FILE, WEIGHTS_FILE, CheckpointStore
from models_core.images import held_out_faces, psnr


def stored_bytes(ckpt) -> int:
    return sum((ckpt.path / f).stat().st_size for f in (WEIGHTS_FILE, EXTRAS_FILE) if (ckpt.path / f).is_file())


@torch.no_grad()
def images(ckpt, faces: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    net = ckpt.model.float().eval()
    if ckpt.kind.has_encoder:
        return {"reconstructions": net.decode(net.embed(faces))}
    out = {"G(z)": net.decode(z)}
    if ckpt.encoder is not None:
        out["G(E(x))"] = net.decode(ckpt.encoder(faces))
    return out


@torch.no_grad()
def samples(ckpt, n: int, seed: int) -> torch.Tensor:
    z = ckpt.sample_latents(n, torch.Generator().manual_seed(seed))
    return torch.cat([ckpt.model.float().decode(chunk) for chunk in z.split(250)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--data", type=Path, help="prepared dataset: adds FID against its test faces")
    p.add_argument("--model", nargs="+", help="these models only (default: every model under the root)")
    p.add_argument("--fid-n", type=int, default=500, help="samples and test faces per FID (default: %(default)s)")
    args = p.parse_args()
    store = CheckpointStore(args.checkpoints)
    faces = held_out_faces()
    z = torch.randn(len(faces), 100, generator=torch.Generator().manual_seed(0))
    fid = None  # (images) -> FID against the test faces, with --data
    if args.data is not None:
        from trainer.data import PackedFaces
        from trainer.fid import fid_from_features, inception_features, load_inception, real_features

        net, data = load_inception(), PackedFaces.open(args.data)
        real = real_features(net, data, "test", args.fid_n, "cpu", progress=False)

        fid = lambda x: fid_from_features(inception_features(net, x, "cpu", progress=False), real)  # noqa: E731

    with tempfile.TemporaryDirectory() as tmp:
        int8_store = CheckpointStore(tmp)
        for name in args.model or store.models():
            ckpt = store.load(name)
            m = ckpt.manifest
            copy = int8_store.load(name, int8_store.copy_from(store, name, dtype=torch.int8))
            a, b = images(ckpt, faces, z[:, : ckpt.model.latent_dim]), images(copy, faces, z[:, : ckpt.model.latent_dim])
            cells = ", ".join(f"{k} {psnr(b[k], a[k]).mean():.1f} dB" for k in a)
            print(f"{name} v{m.version} ({m.weights_dtype} {stored_bytes(ckpt) / 2**20:.1f} MiB -> int8 "
                  f"{stored_bytes(copy) / 2**20:.1f} MiB): int8 against {m.weights_dtype}: {cells}", flush=True)
            if fid is not None:
                original, other, int8 = fid(samples(ckpt, args.fid_n, 1)), fid(samples(ckpt, args.fid_n, 2)), fid(samples(copy, args.fid_n, 1))
                print(f"  FID (N={args.fid_n}, test): {m.weights_dtype} {original:.2f}, int8 {int8:.2f} (the same latents), "
                      f"{m.weights_dtype} with other latents {other:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
