import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data import prepare_data

REPO = Path(__file__).resolve().parents[2]


def face(i: int, size=(178, 218)) -> Image.Image:
    """A 'CelebA-like' image: red bands top and bottom (outside the centre square), a colour
    that encodes i inside it, and a gradient so the pixels are not all equal."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = ((i * 37) % 180, 60 + (i * 91) % 180, 128)
    a[:, :, 2] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    band = (h - w) // 2
    if band:
        a[:band] = a[-band:] = (255, 0, 0)
    return Image.fromarray(a)


def write_celeba(folder: Path, n: int, partition_extra: int = 0) -> list[str]:
    """img_align_celeba/NNNNNN.jpg + list_eval_partition.txt (train, valid, test by thirds)."""
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for i, name in enumerate(names):
        face(i).save(folder / "img_align_celeba" / name, quality=95)
    lines = [f"{name} {min(2, 3 * i // n)}" for i, name in enumerate(names)]
    lines += [f"{n + k + 1:06d}.jpg 0" for k in range(partition_extra)]  # listed but absent
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return names


def zip_folder(folder: Path, zip_path: Path) -> None:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(folder.rglob("*.jpg")):
            zf.write(p, f"img_align_celeba/{p.name}")


@pytest.fixture(scope="session")
def packed(tmp_path_factory) -> Path:
    """A prepared dataset of 96 synthetic faces: 64 train, 16 valid, 16 test."""
    root = tmp_path_factory.mktemp("celeba")
    n = 96
    (root / "img_align_celeba").mkdir()
    for i in range(n):
        face(i, (40, 48)).save(root / "img_align_celeba" / f"{i + 1:06d}.png")
    split = lambda i: 0 if i < 64 else (1 if i < 80 else 2)  # noqa: E731
    (root / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.png {split(i)}\n" for i in range(n)))
    out = tmp_path_factory.mktemp("packed") / "faces64"
    prepare_data(root, out, workers=1, progress=False)
    return out


def run_trainer(*args, cwd: Path, env_extra=None, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)
