"""Does a grid show faces? The check the API tests and the web page's browser tests share.

A flat grey or beige tile (what z = 0 decodes to for an AE or a GAN) has almost no pixel
variation; a face has hair, eyes and background. So: the mean over tiles of each tile's pixel
standard deviation (0-255), against the same figure for real held-out faces.
"""

import io
from functools import cache
from importlib import resources

import numpy as np
from PIL import Image

TILE, PAD = 64, 2  # models_core.images.image_grid's layout


def tile_stds(png: bytes, tile: int = TILE, pad: int = PAD) -> np.ndarray:
    """Pixel std of every tile of a grid PNG (a single image is one tile, with no border)."""
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    if a.shape[:2] == (tile, tile):
        return np.array([a.std()])
    rows, cols = (a.shape[0] - pad) // (tile + pad), (a.shape[1] - pad) // (tile + pad)
    return np.array([a[pad + r * (tile + pad):][:tile, pad + c * (tile + pad):][:, :tile].std()
                     for r in range(rows) for c in range(cols)])


@cache
def real_face_std() -> float:
    """The mean tile std of the 64 held-out CelebA faces the service ships (an 8×8 grid, no padding)."""
    png = resources.files("models_core").joinpath("data/faces.png").read_bytes()
    return float(tile_stds(png, pad=0).mean())


def face_likeness(png: bytes) -> float:
    """Mean tile std of a grid as a fraction of real faces'."""
    return float(tile_stds(png).mean()) / real_face_std()


def assert_shows_faces(png: bytes, what: str = "grid", min_fraction: float = 0.6) -> None:
    fraction = face_likeness(png)
    assert fraction >= min_fraction, (f"{what}: tiles vary {fraction:.0%} as much as real faces "
                                      f"(need {min_fraction:.0%}): flat colour, not faces")
