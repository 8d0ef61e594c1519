"""Schemathesis hook, loaded by schemathesis.toml: the files a generated request uploads are images.

A JSON schema cannot say "bytes that decode as an image", and a server that reads faces rightly answers 415
to any other bytes. So, as schemathesis documents for binary formats, the client brings images: each
non-empty generated file becomes a small PNG, JPEG or WebP whose size and colour come from those bytes.
A body of another shape (a negative case) is left as generated."""

import hashlib
import io

import schemathesis
from PIL import Image
from schemathesis.transport.serialization import Binary

FORMATS = ("PNG", "JPEG", "WEBP")


def as_image(data: bytes) -> bytes:
    h = hashlib.sha256(data).digest()
    out = io.BytesIO()
    Image.new("RGB", (1 + h[0] % 96, 1 + h[1] % 96), tuple(h[2:5])).save(out, format=FORMATS[h[5] % 3])
    return out.getvalue()


def is_file(value) -> bool:
    raw = value.data if isinstance(value, Binary) else value
    return isinstance(raw, (bytes, str)) and len(raw) > 0  # a file part's content may be generated as text


def image_of(value) -> Binary:
    raw = value.data if isinstance(value, Binary) else value
    return Binary(as_image(raw.encode() if isinstance(raw, str) else raw))


def imaged(value, many: bool):
    """The value with its files as images, if it has the shape the schema asks for; else as generated."""
    if many and isinstance(value, list) and value and all(is_file(v) for v in value):
        return [image_of(v) for v in value]
    if not many and is_file(value):
        return image_of(value)
    return value


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict):
        # This API's uploads: `files` is a list of images (/reconstruct, /project, /edit); `a` and `b` are one each.
        return {name: imaged(value, many=name == "files") for name, value in body.items()}
    return body
