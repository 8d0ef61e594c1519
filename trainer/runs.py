"""Run folders: runs/00007-gan/ holds config.json, metrics.jsonl, TensorBoard events, sample
grids and the resume state. Folders are numbered, claimed atomically and never overwritten."""

import json
import re
from pathlib import Path

from trainer.state import STATE_FILE

RUN_RE = re.compile(r"^(\d{5})-(.+)$")


def create_run_dir(runs_dir: Path, name: str) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    while True:
        numbers = [int(m.group(1)) for p in runs_dir.iterdir() if (m := RUN_RE.match(p.name))]
        path = runs_dir / f"{max(numbers, default=0) + 1:05d}-{name}"
        try:
            path.mkdir()  # fails if another process claimed the number first
            return path
        except FileExistsError:
            continue


def latest_resumable_run(runs_dir: Path, name: str) -> Path | None:
    """The highest-numbered run of `name` that has a resume state."""
    if not runs_dir.is_dir():
        return None
    runs = [p for p in runs_dir.iterdir() if (m := RUN_RE.match(p.name)) and m.group(2) == name and (p / STATE_FILE).is_file()]
    return max(runs, default=None, key=lambda p: p.name)


def write_config(run_dir: Path, config: dict) -> None:
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def read_config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())
