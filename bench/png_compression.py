"""PNG encoding cost vs size for the service's typical response: an 8×8 grid of 64×64 faces.

    python bench/png_compression.py [path/to/img_align_celeba.zip]

Real faces matter here: noise does not compress and flat colour compresses too well.
Without a zip it falls back to smooth synthetic images and says so.
"""

import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models_core.images import center_crop_resize, encode_png, image_grid, pil_to_tensor

DEFAULT_ZIP = Path(__file__).resolve().parents[2] / "shared/data/celeba-558/img_align_celeba.zip"


def faces(zip_path: Path, n: int = 64) -> torch.Tensor:
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(m for m in zf.namelist() if m.endswith(".jpg"))[:n]
        return torch.stack([pil_to_tensor(center_crop_resize(Image.open(zf.open(m)).convert("RGB"))) for m in names])


def synthetic(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g) * 2 - 1, size=64, mode="bicubic").clamp(-1, 1)


def main():
    zip_path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ZIP
    images = faces(zip_path) if zip_path.exists() else synthetic()
    print(f"images: {'real faces from ' + str(zip_path) if zip_path.exists() else 'synthetic (no zip found)'}")
    grid = image_grid(images, nrow=8)
    print(f"grid {grid.shape[1]}×{grid.shape[0]}, raw {grid.nbytes / 1024:.0f} KiB")
    print("level  size KiB  encode ms (median of 20)")
    for level in (0, 1, 3, 6, 9):
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            data = encode_png(grid, compress_level=level)
            times.append(time.perf_counter() - t0)
        print(f"{level:5d}  {len(data) / 1024:8.1f}  {np.median(times) * 1000:9.2f}")


if __name__ == "__main__":
    main()
