import io

import numpy as np
import pytest
import torch
from PIL import Image

from models_core.images import (
    ImageDecodeError, decode_image, encode_png, from_uint8, image_grid, to_uint8,
)


def png_bytes(image: Image.Image, fmt="PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_uint8_round_trip_is_exact():
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_uint8(from_uint8(u)), u)
    assert to_uint8(torch.tensor([-5.0, -1.0, 0.0, 1.0, 5.0])).tolist() == [0, 0, 128, 255, 255]


def test_grid_layout_and_png_determinism():
    images = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 1.0, 0.0)])
    grid = image_grid(images, nrow=2, padding=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3) and grid.dtype == np.uint8
    assert (grid[1:5, 1:5] == 0).all() and (grid[1:5, 6:10] == 255).all()
    data = encode_png(grid)
    assert data == encode_png(grid.copy())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), grid)


def test_decode_centre_crops_and_resizes_to_model_input():
    # A 178×218 "CelebA" image: red band top and bottom, green square in the middle.
    array = np.zeros((218, 178, 3), np.uint8)
    array[:20] = array[-20:] = (255, 0, 0)
    array[20:-20] = (0, 255, 0)
    x = decode_image(png_bytes(Image.fromarray(array)))
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    # The centred 178×178 square lies inside the green part: no red survives the crop.
    assert (x[0] < -0.9).all() and (x[1] > 0.9).all()


def test_decode_honours_exif_orientation():
    array = np.zeros((40, 80, 3), np.uint8)  # wide, left half white
    array[:, :40] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = png_bytes(Image.fromarray(array), fmt="JPEG", exif=exif.tobytes(), quality=95)
    x = decode_image(data, size=8)
    # Displayed upright the image is tall with the white half on top; centre crop is a 40×40
    # square straddling the boundary: top rows white, bottom rows black.
    assert x[:, 0].mean() > 0.8 and x[:, -1].mean() < -0.8


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16", "CMYK"])
def test_decode_accepts_common_modes(mode):
    image = Image.new("RGB", (30, 30), (200, 30, 30)).convert(mode)
    x = decode_image(png_bytes(image, fmt="JPEG" if mode == "CMYK" else "PNG"), size=16)
    assert x.shape == (3, 16, 16)


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert (decode_image(png_bytes(image), size=4) == 1).all()


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"hello, this is not an image", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
])
def test_decode_rejects_non_images(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "GIF", "ICO"])
def test_only_png_jpeg_and_webp_decoders_see_uploads(fmt):
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    with pytest.raises(ImageDecodeError, match="PNG, JPEG and WebP are read"):
        decode_image(png_bytes(image, fmt=fmt))


def test_decode_rejects_truncated_images():
    rng = np.random.default_rng(0)
    data = png_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])
    jpeg = png_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), fmt="JPEG")
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(jpeg[: len(jpeg) // 2])


def test_decode_enforces_byte_and_pixel_limits():
    data = png_bytes(Image.new("RGB", (300, 200)))
    with pytest.raises(ImageDecodeError, match="limit is 100 bytes"):
        decode_image(data, max_bytes=100)
    with pytest.raises(ImageDecodeError, match="300×200 pixels"):
        decode_image(data, max_pixels=300 * 200 - 1)


def test_decompression_bomb_is_refused_before_decoding():
    # 20000×20000 of zeros compresses to a few hundred KB but would need 1.2 GB to decode.
    bomb = png_bytes(Image.new("L", (20000, 20000)), optimize=False)
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageDecodeError, match="too large|20000×20000"):
        decode_image(bomb)
