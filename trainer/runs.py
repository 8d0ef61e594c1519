"""Run folders: runs/00007-gan/ holds config.json, metrics.jsonl, TensorBoard events, sample
grids and the resume state. Folders are numbered, claimed atomically and never overwritten."""

import json
import re
from pathlib import Path

from models_core.atomic_files import atomic_write_bytes, claim_next_number
from trainer.state import STATE_FILE

RUN_RE = re.compile(r"^(\d{5})-(.+)$")


def create_run_dir(runs_dir: Path, name: str) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)

    def next_number() -> int:
        return max((int(m.group(1)) for p in runs_dir.iterdir() if (m := RUN_RE.match(p.name))), default=0) + 1

    def claim(n: int) -> bool:
        try:
            (runs_dir / f"{n:05d}-{name}").mkdir()  # fails if another process claimed the number first
            return True
        except FileExistsError:
            return False

    return runs_dir / f"{claim_next_number(next_number, claim):05d}-{name}"


def latest_resumable_run(runs_dir: Path, name: str) -> Path | None:
    """The highest-numbered run of `name` that has a resume state."""
    if not runs_dir.is_dir():
        return None
    runs = [p for p in runs_dir.iterdir() if (m := RUN_RE.match(p.name)) and m.group(2) == name and (p / STATE_FILE).is_file()]
    return max(runs, default=None, key=lambda p: p.name)


def write_config(run_dir: Path, config: dict) -> None:
    atomic_write_bytes(run_dir / "config.json", (json.dumps(config, indent=2) + "\n").encode())


def read_config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())
