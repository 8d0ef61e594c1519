"""Training metrics: a progress bar, TensorBoard events and metrics.jsonl (one JSON object per line)."""

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


def format_duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s" if m else f"{s}s"


class RunLog:
    """With progress off, a one-line summary replaces the bar, at most every `summary_every` seconds."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool, progress: bool,
                 summary_every: float = 30.0):
        self.enabled, self.total, self.summary_every = enabled, total_steps, summary_every
        self.quiet = enabled and not progress
        self.started, self.start_step, self.last_summary = time.monotonic(), start_step, float("-inf")
        self.deadline: float | None = None  # when --time-limit ends the run (time.monotonic), if it does
        self.jsonl = open(run_dir / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is the [train] extra; metrics.jsonl still works
                self.tb = None
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=not (enabled and progress))

    def scalars(self, step: int, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "epoch": epoch, "time": round(time.time(), 3), **values}) + "\n")
        self.jsonl.flush()
        if self.tb:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k != "lr"}, refresh=False)
        if self.quiet and time.monotonic() - self.last_summary >= self.summary_every:
            self.last_summary = time.monotonic()
            self.write(self.summary(step, epoch, values))

    def summary(self, step: int, epoch: int, values: dict[str, float]) -> str:
        now = time.monotonic()
        rate = (step - self.start_step) / max(now - self.started, 1e-9)
        left = (self.total - step) / rate if rate > 0 and step < self.total else None
        if left is not None and self.deadline is not None and self.deadline - now < left:
            left, why = max(self.deadline - now, 0.0), " (time limit)"
        else:
            why = ""
        eta = f", {format_duration(left)} to go{why}" if left is not None else ""
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k not in ("lr", "img_per_s"))
        speed = f" {values['img_per_s']:.0f} img/s" if "img_per_s" in values else ""
        return f"step {step}/{self.total} (epoch {epoch}) {shown}{speed}{eta}"

    def image(self, tag: str, step: int, grid: np.ndarray) -> None:
        if self.tb:
            self.tb.add_image(tag, torch.from_numpy(grid).permute(2, 0, 1), step)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def write(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message)

    def close(self) -> None:
        self.bar.close()
        if self.jsonl:
            self.jsonl.close()
        if self.tb:
            self.tb.close()
