"""CelebA-64 as one packed uint8 array: preparation (`prepare-data`) and training batches.

A prepared dataset DIR holds
    images.npy     (N, 64, 64, 3) uint8, memory-mappable with np.load(mmap_mode="r")
    splits.npz     int64 indices into images.npy: train, valid, test
    names.txt      the source file name of each row
    attributes.npz when CelebA's list_attr_celeba.txt was found: names (A,) and labels (N, A) int8,
                   +1 / -1, 0 for a face the file has no row for (unknown, not negative)
    dataset.json   fingerprint (sha256 of images.npy's array bytes), counts, recipe, skipped files

Recipe: the largest centred square (178×178 of CelebA's 178×218 aligned faces, i.e. rows 20..198),
resized to 64×64 with Pillow's antialiased bicubic filter; the same function the service applies
to uploads (models_core.images.center_crop_resize).
"""

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models_core.atomic_files import replace_dir
from models_core.images import ImageDecodeError, center_crop_resize, from_uint8, open_image
from trainer.sources import SPLITS, AttributeTable, ImageRef, SourceError, find_source, read_attributes, read_partition

RECIPE = "largest centred square, resized with PIL bicubic (antialiased) to {size}x{size}, EXIF-upright RGB"
MAX_SOURCE_BYTES = 64 * 1024 * 1024  # a single source image larger than this is surely not a face crop
MAX_SOURCE_PIXELS = 8192 * 8192


# --- preparation ------------------------------------------------------------------------------

_open_zips: dict[str, zipfile.ZipFile] = {}  # per worker process


def read_bytes(ref: ImageRef) -> bytes:
    if ref.member is None:
        return Path(ref.path).read_bytes()
    if ref.path not in _open_zips:
        _open_zips[ref.path] = zipfile.ZipFile(ref.path)
    return _open_zips[ref.path].read(ref.member)


def decode_one(ref: ImageRef, size: int) -> np.ndarray | str:
    """The packed face, or a one-line reason why this file was skipped."""
    try:
        image = open_image(read_bytes(ref), MAX_SOURCE_BYTES, MAX_SOURCE_PIXELS)
        return np.asarray(center_crop_resize(image, size), dtype=np.uint8)
    except (ImageDecodeError, OSError, zipfile.BadZipFile, KeyError) as e:
        return f"{type(e).__name__}: {e}"


def assign_splits(names: list[str], partition: dict[str, str] | None, seed: int, fractions=(0.8, 0.1, 0.1)):
    """{split: indices}. The official partition when it covers the images, a seeded split otherwise.

    Images missing from the partition file go to train; the count is reported.
    """
    if partition and any(n in partition for n in names):
        labels = [partition.get(n, "train") for n in names]
        unlisted = sum(n not in partition for n in names)
        return {s: np.array([i for i, l in enumerate(labels) if l == s], np.int64) for s in SPLITS}, "official", unlisted
    order = np.random.default_rng(seed).permutation(len(names))
    n_valid, n_test = int(len(names) * fractions[1]), int(len(names) * fractions[2])
    cut = len(names) - n_valid - n_test
    parts = (order[:cut], order[cut : cut + n_valid], order[cut + n_valid :])
    return {s: np.sort(p).astype(np.int64) for s, p in zip(SPLITS, parts)}, f"seeded (seed {seed}, 80/10/10)", 0


def fingerprint(array: np.ndarray) -> str:
    h = hashlib.sha256()
    flat = array.reshape(len(array), -1)
    for start in range(0, len(flat), 4096):
        h.update(np.ascontiguousarray(flat[start : start + 4096]).data)
    return h.hexdigest()


def prepare_data(
    source: Path, out: Path, size: int = 64, workers: int | None = None, seed: int = 0,
    partition: Path | None = None, overwrite: bool = False, limit: int | None = None, progress: bool = True,
    attributes: Path | None = None, random_split: bool = False,
) -> dict:
    """Decode SOURCE into a packed dataset at `out` (written to a temp dir, then renamed).

    `random_split` ignores any partition file for the seeded 80/10/10 split."""
    if out.exists() and not overwrite:
        raise SourceError(f"{out} already exists; pass --overwrite to replace it")
    src = find_source(source, partition, attributes)
    table = read_attributes(src.attribute_file) if src.attribute_file else None  # a malformed file fails before decoding
    refs = src.images[:limit] if limit else src.images
    workers = workers or os.cpu_count() or 1

    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        kept, skipped = decode_into(tmp / "images.npy", refs, size, workers, progress)
        if not kept:
            raise SourceError(f"none of the {len(refs)} images in {source} could be decoded; first error: {skipped[0]['error']}")

        images = np.load(tmp / "images.npy", mmap_mode="r")
        partition_table = read_partition(src.partition_file) if src.partition_file and not random_split else None
        splits, split_kind, unlisted = assign_splits(kept, partition_table, seed)
        np.savez(tmp / "splits.npz", **splits)
        labels = align_attributes(table, kept, src.attribute_file) if table else None
        if labels is not None:
            np.savez(tmp / "attributes.npz", names=np.array(table.names), labels=labels)
        (tmp / "names.txt").write_text("\n".join(kept) + "\n")
        report = {
            "fingerprint": fingerprint(images),
            "n_images": len(kept),
            "size": size,
            "splits": {s: len(idx) for s, idx in splits.items()},
            "split_kind": split_kind,
            "unlisted_in_partition": unlisted,
            "source": str(source),
            "layout": src.layout,
            "partition_file": str(src.partition_file) if src.partition_file and not random_split else None,
            "attributes": None if labels is None else {
                "file": str(src.attribute_file),
                "n_labelled": int((labels != 0).any(1).sum()),
                "n_labelled_by_split": {s: int((labels[idx] != 0).any(1).sum()) for s, idx in splits.items()},
                "positives": {n: int((labels[:, j] == 1).sum()) for j, n in enumerate(table.names)},
            },
            "recipe": RECIPE.format(size=size),
            "n_skipped": len(skipped),
            "skipped": skipped[:1000],
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        del images
        (tmp / "dataset.json").write_text(json.dumps(report, indent=2) + "\n")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def decode_into(path: Path, refs: list[ImageRef], size: int, workers: int, progress: bool) -> tuple[list[str], list[dict]]:
    """Decode `refs` on `workers` processes into the uint8 array file `path`, in order, leaving out
    the unreadable: (names kept, {file, error} of those skipped)."""
    packed = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(refs), size, size, 3))
    kept, skipped = [], []
    with ProcessPoolExecutor(workers) as pool:
        results = pool.map(decode_one, refs, [size] * len(refs), chunksize=64)
        for ref, result in tqdm(zip(refs, results), total=len(refs), desc="decoding", unit="img", disable=not progress):
            if isinstance(result, str):
                skipped.append({"file": ref.member or ref.path, "error": result})
                continue
            packed[len(kept)] = result
            kept.append(ref.name)
    packed.flush()
    del packed
    if kept and len(kept) < len(refs):
        compact(path, len(kept))
    return kept, skipped


def align_attributes(table: AttributeTable, names: list[str], path: Path) -> np.ndarray:
    """(N, A) int8 labels in the order of `names`: the file's +1/-1, 0 where it has no row."""
    labels = np.zeros((len(names), len(table.names)), np.int8)
    for i, name in enumerate(names):
        if name in table.rows:
            labels[i] = table.rows[name]
    if table.rows and not (labels != 0).any():
        first = next(iter(table.rows))
        raise SourceError(f"{path}:3: none of its {len(table.rows)} image names ({first}, ...) is one of the "
                          f"{len(names)} faces being packed; is it the attribute file of another dataset?")
    return labels


def compact(path: Path, n: int) -> None:
    """Shrink images.npy to its first n rows (the skipped files left the tail unused)."""
    full = np.load(path, mmap_mode="r")
    small_path = path.with_name("images.compact.npy")
    small = np.lib.format.open_memmap(small_path, mode="w+", dtype=np.uint8, shape=(n, *full.shape[1:]))
    for start in range(0, n, 4096):
        small[start : start + 4096] = full[start : min(n, start + 4096)]
    small.flush()
    del small, full
    os.replace(small_path, path)


# --- training-time access ---------------------------------------------------------------------


def prepare_advice(path: Path) -> str:
    """What to run when `path` was given as a prepared dataset but is not one."""
    if path.is_file() or (path.is_dir() and any(path.iterdir())):
        # A zip or a folder of images: CelebA itself, to be packed into a folder of its own.
        out = path.with_name(f"{path.stem if path.is_file() else path.name}-64")
        return f"if it is CelebA itself, pack it first: python -m trainer prepare-data {path} --out {out}, then pass --data {out}"
    return f"make one with: python -m trainer prepare-data SOURCE --out {path}"


@dataclass
class PackedFaces:
    root: Path
    images: np.ndarray  # (N, H, W, 3) uint8, memory-mapped
    splits: dict[str, np.ndarray]
    info: dict

    @classmethod
    def open(cls, root: str | Path) -> "PackedFaces":
        root = Path(root)
        for name in ("images.npy", "splits.npz", "dataset.json"):
            if not (root / name).is_file():
                raise SourceError(f"{root} is not a prepared dataset ({name} is missing); {prepare_advice(root)}")
        with np.load(root / "splits.npz", allow_pickle=False) as z:
            splits = {s: z[s] for s in SPLITS}
        return cls(root, np.load(root / "images.npy", mmap_mode="r"), splits, json.loads((root / "dataset.json").read_text()))

    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]

    def tensor(self, split: str, device: torch.device | str = "cpu", limit: int | None = None) -> torch.Tensor:
        """(N, H, W, 3) uint8 of one split, materialised on `device`."""
        idx = self.splits[split][:limit]
        return torch.from_numpy(np.ascontiguousarray(self.images[idx])).to(device)

    def attributes(self) -> tuple[list[str], np.ndarray] | None:
        """(attribute names, (N, A) int8 labels: +1, -1, 0 unknown), or None for a dataset without labels."""
        if not (self.root / "attributes.npz").is_file():
            return None
        with np.load(self.root / "attributes.npz", allow_pickle=False) as z:
            return [str(n) for n in z["names"]], z["labels"]

    def held_out(self, scoring: bool = False) -> str:
        """A split never trained on: valid for choosing and fitting (PCA bases, versions), test for final
        scores (`scoring`); the other one where that one is empty, and train only where both are."""
        order = ("test", "valid") if scoring else ("valid", "test")
        return next((s for s in order if len(self.splits[s])), "train")


class FaceBatches:
    """Shuffled, flipped float batches from a uint8 tensor that already lives on the device.

    The order is a pure function of (seed, epoch): every DDP rank computes the same permutation
    and takes its own stride of it, and a resumed run replays an epoch from any batch.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0, flip: bool = True, rank: int = 0, world: int = 1):
        if len(images) < batch_size * world:
            raise ValueError(f"{len(images)} images are fewer than one batch of {batch_size} per rank × {world} ranks")
        self.images, self.batch_size, self.seed, self.flip, self.rank, self.world = images, batch_size, seed, flip, rank, world

    def __len__(self) -> int:
        return len(self.images) // (self.batch_size * self.world)

    def epoch(self, epoch: int, start: int = 0):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.images), generator=g)[self.rank :: self.world]
        flips = torch.rand(len(order), generator=g) < 0.5
        for b in range(start, len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield self.to_float(self.images[order[sl].to(self.images.device)], flips[sl] if self.flip else None)

    @staticmethod
    def to_float(batch: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        x = from_uint8(batch).permute(0, 3, 1, 2)  # (B, 3, H, W), channels_last memory
        if flips is not None:
            x = torch.where(flips.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        return x
