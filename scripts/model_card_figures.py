"""Render the model card's figures through the service's own endpoints, so they show what it serves.

    python scripts/model_card_figures.py [--root checkpoints] [--out docs/figures]

Per model: samples, a slerp interpolation, a PCA grid and the study's latent grid; for AE/VAE also reconstructions of the
shipped held-out faces (originals above reconstructions). Fixed seeds, so reruns give the same files.
"""

import argparse
import sys
from pathlib import Path

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

FIGURES = {
    "samples": ("/sample", dict(n=32, nrow=8, seed=0)),
    "slerp": ("/interpolate", dict(rows=4, steps=8, seed_a=1, seed_b=2, method="slerp")),
    "pca": ("/pca-grid", dict(pc_x=0, pc_y=1, steps=7, span=3)),
    "latent_grid": ("/latent-grid", dict(dim_x=0, dim_y=1, steps=7, span=3)),
    "reconstructions": ("/reconstruct", dict(n=16, seed=0)),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("checkpoints"), help="checkpoint store (default: checkpoints)")
    p.add_argument("--out", type=Path, default=Path("docs/figures"), help="folder for the PNGs (default: docs/figures)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with TestClient(create_app(Settings(checkpoint_root=args.root, _env_file=None))) as client:
        for model in client.get("/models").json()["models"]:
            name, kind = model["name"], model["kind"]
            for figure, (path, params) in FIGURES.items():
                if figure == "reconstructions" and kind == "gan":
                    continue
                r = client.get(path, params={"model": name, **params})
                r.raise_for_status()
                out = args.out / f"{name}_{figure}.png"
                out.write_bytes(r.content)
                print(f"{out}  ({len(r.content) // 1024} KiB, {name} v{r.headers['x-model-version']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
