"""Finding the face images in whatever layout a user's CelebA download has.

Accepted SOURCEs:
  - torchvision's layout:   ROOT/celeba/img_align_celeba/*.jpg + ROOT/celeba/list_eval_partition.txt
  - the official zip:       img_align_celeba.zip (partition file beside it)
  - the unpacked folder:    img_align_celeba/ (partition file beside it, inside, or in ../Eval/)
  - any folder of images (searched recursively), or a zip of them: a seeded split is used.

CelebA's attribute labels (list_attr_celeba.txt) are looked for where each layout keeps them:
beside the partition file, in torchvision's celeba/, and in the official download's Anno/.
"""

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
PARTITION_FILE = "list_eval_partition.txt"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
SPLITS = ("train", "valid", "test")


class SourceError(ValueError):
    """The SOURCE given to prepare-data holds no usable images; the message says what was found."""


@dataclass(frozen=True)
class ImageRef:
    """One image: a file path, or a member of a zip archive."""

    name: str  # file name, the key of the partition file (e.g. 000001.jpg)
    path: str  # file path, or the zip's path
    member: str | None = None  # zip member, when the image is inside a zip


@dataclass
class Source:
    images: list[ImageRef]
    partition_file: Path | None
    layout: str
    attribute_file: Path | None = None


@dataclass
class AttributeTable:
    """CelebA's binary face attributes: {image name: row of +1/-1}, one column per name."""

    names: list[str]
    rows: dict[str, list[int]]


def is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not Path(name).name.startswith(".")


def find_source(source: Path, partition: Path | None = None, attributes: Path | None = None) -> Source:
    """Resolve SOURCE to its images and (if any) its official partition and attribute files."""
    source = source.expanduser()
    if not source.exists():
        raise SourceError(f"{source} does not exist")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise SourceError(f"{source} is a file but not a zip archive; give a folder of images or a zip")
        images, layout = zip_images(source), "zip"
        search = [source.parent]
    else:
        images, layout, search = folder_images(source)
    if not images:
        raise SourceError(f"{source} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if partition is None:
        partition = next((d / PARTITION_FILE for d in search if (d / PARTITION_FILE).is_file()), None)
    elif not partition.is_file():
        raise SourceError(f"partition file {partition} does not exist")
    if attributes is None:
        places = [p for d in search for p in (d, d / "Anno", d.parent / "Anno")]
        attributes = next((d / ATTRIBUTE_FILE for d in places if (d / ATTRIBUTE_FILE).is_file()), None)
    elif not attributes.is_file():
        raise SourceError(f"attribute file {attributes} does not exist")
    return Source(sorted(images, key=lambda r: r.name), partition, layout, attributes)


def zip_images(path: Path) -> list[ImageRef]:
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if is_image(m) and not m.startswith("__MACOSX/")]
    except zipfile.BadZipFile as e:
        raise SourceError(f"{path} is not a readable zip archive: {e}") from None
    return [ImageRef(Path(m).name, str(path), m) for m in members]


def folder_images(root: Path) -> tuple[list[ImageRef], str, list[Path]]:
    """Prefer the official sub-layouts when present, else every image under root."""
    for folder, layout in ((root / "celeba" / "img_align_celeba", "torchvision"), (root / "img_align_celeba", "celeba-folder")):
        if folder.is_dir() and any(is_image(p.name) for p in folder.iterdir()):
            return scan(folder), layout, [root / "celeba", root, folder, root / "Eval"]
    for zip_path in (root / "celeba" / "img_align_celeba.zip", root / "img_align_celeba.zip"):
        if zip_path.is_file():
            return zip_images(zip_path), "celeba-zip", [zip_path.parent, root, root / "Eval"]
    return scan(root), "folder", [root, root.parent, root.parent / "Eval"]


def scan(folder: Path) -> list[ImageRef]:
    return [ImageRef(p.name, str(p)) for p in folder.rglob("*") if p.is_file() and is_image(p.name)]


def read_partition(path: Path) -> dict[str, str]:
    """CelebA's `NNNNNN.jpg P` lines (P: 0 train, 1 valid, 2 test) -> {name: split}."""
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise SourceError(f"{path}:{lineno}: expected 'NAME 0|1|2', got {line!r}")
        out[parts[0]] = SPLITS[int(parts[1])]
    return out


def read_attributes(path: Path) -> AttributeTable:
    """CelebA's list_attr_celeba.txt: a count line (not trusted: partial copies keep the full count),
    the attribute names, then `NAME v1 ... vA` rows of 1/-1. Any line ending; errors name the line."""
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise SourceError(f"{path}:1: expected the image count of CelebA's attribute file, got {lines[0][:80] if lines else ''!r}")
    names = lines[1].split()
    if not names:
        raise SourceError(f"{path}:2: expected the attribute names, got an empty line")
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", n)]
    if bad:
        raise SourceError(f"{path}:2: attribute names are letters, digits and _ (at most 64), got {bad[0]!r}")
    rows = {}
    for lineno, line in enumerate(lines[2:], 3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise SourceError(f"{path}:{lineno}: expected an image name and {len(names)} values, got {len(parts)} columns")
        values = parts[1:]
        bad = next((v for v in values if v not in ("1", "-1")), None)
        if bad is not None:
            raise SourceError(f"{path}:{lineno}: attribute values are 1 or -1, got {bad!r} for {names[values.index(bad)]}")
        rows[parts[0]] = [int(v) for v in values]
    return AttributeTable(names, rows)
