"""Images in and out: [-1, 1] tensors <-> uint8, grids, PNG bytes, and user uploads.

Uploads are untrusted: decode_image checks size, pixel count (decompression bombs) and
truncation before anything reaches a model, and raises ImageDecodeError with a message fit to
show the user.
"""

import io
import math
import warnings
from functools import cache
from importlib import resources

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.utils import make_grid

# Level 1 encodes a grid of faces in about half the time of Pillow's default (6) for ~6% more bytes
# (bench/png_compression.py prints both); responses are cacheable, so encode time matters more.
PNG_COMPRESS_LEVEL = 1

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096


class ImageDecodeError(ValueError):
    """An upload that cannot become a model input; the message says why."""


class UnsupportedImage(ImageDecodeError):
    """Not a format this reads (PNG, JPEG, WebP) at all, as opposed to a damaged or oversized one."""


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) floats in [-1, 1] -> uint8 in [0, 255] on the CPU; values outside are clipped."""
    return ((images.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def decode_images(decode, z: torch.Tensor, device: torch.device, autocast) -> torch.Tensor:
    """decode(z) as uint8 (B, C, H, W) on the CPU, under inference mode and `autocast`.

    The service calls this on its inference thread so that the threads encoding PNGs do no tensor
    maths: each thread that starts a parallel op gets an OpenMP team of its own, and a handful of
    them oversubscribe a small CPU."""
    with torch.inference_mode(), autocast():
        return to_uint8(decode(z.to(device)))


def square_nrow(n: int) -> int:
    """Faces per row of an n-face grid that is as square as it can be (what /sample lays out)."""
    return math.ceil(math.sqrt(n))


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1], same shape."""
    return images.float() / 127.5 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB between images in [-1, 1], measured on the [0, 1] scale."""
    mse = ((a.float() - b.float()) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """(B, C, H, W) floats in [-1, 1] or uint8 -> (H', W', C) uint8 grid, nrow images per row."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=255)  # (C, H', W')
    return grid.permute(1, 2, 0).numpy()


def originals_over_reconstructions(faces: torch.Tensor, recon: torch.Tensor, width: int = 8) -> tuple[torch.Tensor, int]:
    """uint8 rows of up to `width` originals, each followed by the row of their reconstructions,
    and the row width to lay them out with (blank tiles pad the last rows)."""
    faces, recon = (t if t.dtype == torch.uint8 else to_uint8(t) for t in (faces, recon))
    width = min(width, len(faces))
    pad = (-len(faces)) % width
    blank = torch.full((pad, *faces.shape[1:]), 255, dtype=torch.uint8)
    faces, recon = torch.cat([faces, blank]), torch.cat([recon, blank])
    rows = [t for i in range(0, len(faces), width) for t in (faces[i : i + width], recon[i : i + width])]
    return torch.cat(rows), width


def side_by_side(*grids: np.ndarray, gap: int = 12) -> np.ndarray:
    """Grids (H, W, C) next to each other on white, top-aligned, `gap` pixels apart."""
    height = max(g.shape[0] for g in grids)
    parts = []
    for i, g in enumerate(grids):
        if i:
            parts.append(np.full((height, gap, g.shape[2]), 255, np.uint8))
        parts.append(np.pad(g, ((0, height - g.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)


def encode_png(array: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes. Deterministic: equal arrays give equal bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def center_crop_resize(image: Image.Image, size: int = 64) -> Image.Image:
    """Largest centred square, resized to size×size with antialiased bicubic resampling.

    For a 178×218 aligned CelebA face this is the centred 178×178 square, the usual CelebA-64 view.
    """
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    return from_uint8(torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1))


def decode_image(
    data: bytes, size: int = 64, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS
) -> torch.Tensor:
    """Untrusted image bytes (PNG, JPEG or WebP) -> (3, size, size) model input in [-1, 1]."""
    return pil_to_tensor(center_crop_resize(open_image(data, max_bytes, max_pixels), size))


UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")  # only these decoders ever see untrusted bytes


def open_image(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """Untrusted image bytes -> fully decoded RGB image, upright per its EXIF orientation.

    Alpha is composited onto white; palettes, greyscale and CMYK become RGB.
    """
    if not data:
        raise ImageDecodeError("the file is empty")
    if len(data) > max_bytes:
        raise ImageDecodeError(f"the file is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)  # reads the header only
            w, h = image.size
            if w * h > max_pixels:
                raise ImageDecodeError(f"the image is {w}×{h} pixels; the limit is {max_pixels:,} pixels")
            image.load()  # the full decode: raises on truncated or corrupt data
            return _to_rgb(ImageOps.exif_transpose(image))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"the image is too large to decode safely: {e}") from None
    except Image.UnidentifiedImageError:
        raise UnsupportedImage("the file is not an image: PNG, JPEG and WebP are read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"the image is truncated or corrupt: {e}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency onto white rather than letting convert() expose whatever colour
        # the transparent pixels happen to hold.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@cache
def held_out_faces() -> torch.Tensor:
    """(64, 3, 64, 64) CelebA test-partition faces in [-1, 1], shipped as one 8×8 grid (data/README.md):
    inputs for reconstructions and projections out of the box."""
    with resources.files("models_core").joinpath("data/faces.png").open("rb") as f:
        grid = np.asarray(Image.open(f).convert("RGB"))
    faces = grid.reshape(8, 64, 8, 64, 3).transpose(0, 2, 4, 1, 3).reshape(64, 3, 64, 64)
    return from_uint8(torch.from_numpy(np.ascontiguousarray(faces)))
