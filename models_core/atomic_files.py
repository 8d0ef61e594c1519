"""Files and folders that appear whole or not at all, and numbered folders claimed without a lock.

Every writer of the project (the checkpoint store, prepare-data, the FID feature cache, run
folders, the trainer's resume state) writes beside its target, fsyncs, then renames: a crash
leaves the old file or nothing, never half of one.
"""

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file directly in `folder`, then the folder itself: what a rename must come after."""
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(folder)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder `new` (a sibling of `target`) in `target`'s place, replacing what is there."""
    fsync_tree(new)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    os.rename(new, target)
    fsync_dir(target.parent)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def claim_next_number(next_number: Callable[[], int], claim: Callable[[int], bool], attempts: int = 100) -> int:
    """Claim the next free number without a lock. `claim(n)` makes n's entry in one atomic step (a
    mkdir, a rename) and returns False when another writer took n first; then the next number is
    asked for again. Raises RuntimeError after `attempts` lost races."""
    for _ in range(attempts):
        n = next_number()
        if claim(n):
            return n
    raise RuntimeError(f"could not claim a number after {attempts} attempts")
