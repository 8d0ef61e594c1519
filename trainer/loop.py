"""The training loop: batches -> task.train_step -> EMA -> log -> snapshot -> publish."""

import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models_core.checkpoint import WEIGHT_DTYPES, CheckpointStore
from models_core.images import encode_png, image_grid
from models_core.latent import PcaBasis, sample_prior
from models_core.precision import choose_precision
from trainer.bases import ganspace_basis, latent_pca
from trainer.config import TrainConfig
from trainer.data import FaceBatches, PackedFaces
from trainer.distributed import Dist, any_rank, init_distributed, shutdown
from trainer.ema import EMA
from trainer.log import RunLog
from trainer.runs import create_run_dir, write_config
from trainer.state import STATE_FILE, load_training_state, save_training_state
from trainer.tasks import make_task


class TrainingError(RuntimeError):
    """A run that cannot go on (bad device, changed data, non-finite loss); the message says why."""


@dataclass
class TrainResult:
    run_dir: Path | None
    step: int
    epoch: int
    published: list[int] = field(default_factory=list)
    stopped_by: int | None = None  # the signal that ended the run early, if any


class StopFlag:
    """SIGINT/SIGTERM ask the loop to snapshot and leave; a second SIGINT interrupts at once."""

    def __init__(self):
        self.signum: int | None = None
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def pick_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name} was asked for, but this machine has no usable CUDA device")
        device = torch.device("cuda", d.local_rank) if name == "cuda" else torch.device(name)
        torch.cuda.set_device(device)
        return device
    return torch.device(name)


def train(cfg: TrainConfig, resume_dir: Path | None = None) -> TrainResult:
    d = init_distributed("cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        return _train(cfg, resume_dir, d)
    finally:
        shutdown(d)


def _train(cfg: TrainConfig, resume_dir: Path | None, d: Dist) -> TrainResult:
    device = pick_device(cfg.device, d)
    torch.manual_seed(cfg.seed + d.rank)  # distinct noise per rank; weights are broadcast from rank 0
    data = PackedFaces.open(cfg.data)
    batches = FaceBatches(data.tensor("train", device), cfg.batch_size, cfg.seed, cfg.flip, d.rank, d.world)
    held_out = data.tensor(data.held_out(), "cpu", limit=cfg.pca_samples)
    precision = choose_precision(cfg.precision, device)
    task = make_task(cfg, device, precision.autocast(device), d)
    ema = EMA(task.inference_net, cfg.ema_decay) if cfg.ema else None
    store = CheckpointStore(cfg.checkpoints)
    fixed_z = sample_prior(64, task.inference_net.latent_dim, torch.Generator().manual_seed(cfg.seed)).to(device)

    step = epoch = batch = 0
    published: list[int] = []
    if resume_dir is not None:
        run_dir = resume_dir
        state = load_training_state(resume_dir / STATE_FILE)
        if state["data_fingerprint"] != data.fingerprint:
            raise TrainingError(f"{cfg.data} is not the dataset run {resume_dir} was trained on (fingerprint differs)")
        for key, module in task.modules().items():
            module.load_state_dict(state["modules"][key])
        for key, opt in task.optimizers().items():
            opt.load_state_dict(state["optimizers"][key])
        if ema:
            ema.load_state_dict(state["ema"])
        step, epoch, batch, published = state["step"], state["epoch"], state["batch"], list(state["published"])
        if d.is_main:
            torch.set_rng_state(state["rng"]["cpu"])
            if device.type == "cuda" and state["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        else:
            torch.manual_seed(cfg.seed + d.rank + 7919 * step)
    else:
        run_dir = create_run_dir(cfg.runs_dir, cfg.name) if d.is_main else None
    if d.is_main:
        write_config(run_dir, cfg.to_dict() | {"resolved_precision": precision.to_dict()})

    total = cfg.epochs * len(batches)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    log = RunLog(run_dir, total, step, enabled=d.is_main, progress=cfg.progress)
    log.write(f"run {run_dir}: {cfg.model} ({cfg.preset}) on {device} in {precision.name} ({precision.reason}), "
              f"{len(batches)} steps/epoch, {total - step} steps to go")

    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
    window = {"steps": 0, "t0": time.perf_counter(), "last_good_step": step}

    def flush_metrics():
        """Log the window's mean losses; stop with a clear error if any went non-finite."""
        if not window["steps"]:
            return
        means = {k: (v / window["steps"]).item() for k, v in sums.items()}
        bad = [k for k, v in means.items() if v != v or abs(v) == float("inf")]
        if bad:
            raise TrainingError(
                f"{', '.join(bad)} became non-finite between steps {window['last_good_step']} and {step}; "
                f"stopping. The last good resume state is in {run_dir / STATE_FILE if run_dir else 'the run folder'}. "
                "Try a lower --lr or --precision fp32."
            )
        elapsed = time.perf_counter() - window["t0"]
        means["img_per_s"] = window["steps"] * cfg.batch_size * d.world / max(elapsed, 1e-9)
        means["lr"] = cfg.lr
        log.scalars(step, epoch, means)
        sums.clear()
        window.update(steps=0, t0=time.perf_counter(), last_good_step=step)

    def snapshot():
        flush_metrics()
        if not d.is_main:
            return
        save_training_state(run_dir / STATE_FILE, {
            "step": step, "epoch": epoch, "batch": batch, "published": published,
            "modules": {k: m.state_dict() for k, m in task.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in task.optimizers().items()},
            "ema": ema.state_dict() if ema else None,
            "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            "config": cfg.to_dict(), "data_fingerprint": data.fingerprint,
        })

    def fit_basis(net) -> PcaBasis:
        """What a version stores for /pca-grid: GANSpace directions, or the PCA of held-out latents."""
        if cfg.model == "gan":
            return ganspace_basis(net, device, n_samples=cfg.pca_samples, seed=cfg.seed)
        return latent_pca(net, held_out, device)

    def publish(net, basis: PcaBasis):
        version = store.publish(
            cfg.name, cfg.model, cfg.network_config, net.state_dict(), step=step, epoch=epoch,
            data_fingerprint=data.fingerprint, metrics={k: float(v) for k, v in last.items()},
            extras=basis.to_tensors(), dtype=WEIGHT_DTYPES[cfg.publish_dtype],
        )
        published.append(version)
        log.write(f"published {cfg.name} v{version} (step {step}) to {store.path(cfg.name, version)}")

    @torch.no_grad()
    def write_images(net, basis: PcaBasis | None):
        grids = {}
        z = fixed_z
        if basis is not None:  # AE/VAE: sample as the service does, from the Gaussian of held-out latents
            z = basis.sample(len(fixed_z), torch.Generator().manual_seed(cfg.seed)).to(device)
        grids["samples"] = image_grid(net.decode(z).float(), nrow=8)
        if hasattr(net, "embed"):
            faces = FaceBatches.to_float(held_out[:32].to(device), None)
            grids["reconstructions"] = image_grid(torch.cat([faces, net.decode(net.embed(faces)).float()]), nrow=8)
        (run_dir / "samples").mkdir(exist_ok=True)
        for tag, grid in grids.items():
            log.image(tag, step, grid)
            suffix = "" if tag == "samples" else f"_{tag}"
            (run_dir / "samples" / f"step{step:08d}{suffix}.png").write_bytes(encode_png(grid))

    def end_of_epoch(publish_now: bool):
        """Sample grids, and a published version when one is due; the basis is fitted once for both."""
        if publish_now:
            flush_metrics()
        if not d.is_main:
            return
        net = ema.net if ema else task.inference_net
        was_training = net.training
        net.eval()
        has_encoder = hasattr(net, "embed")
        basis = fit_basis(net) if publish_now or has_encoder else None
        write_images(net, basis if has_encoder else None)
        if publish_now:
            publish(net, basis)
        net.train(was_training)

    stop = StopFlag()
    last, stopping = {}, False
    try:
        while step < total:
            for x in batches.epoch(epoch, start=batch):
                metrics = task.train_step(x)
                if ema:
                    ema.update(task.inference_net)
                step, batch = step + 1, batch + 1
                window["steps"] += 1
                for k, v in metrics.items():
                    sums[k] += v.float()
                last = metrics
                log.advance()
                if step % cfg.log_every == 0:
                    flush_metrics()
                if step % cfg.ckpt_every == 0:
                    snapshot()
                stopping = any_rank(stop.signum is not None, d, device)
                if stopping or step >= total:
                    break
            if stopping:
                snapshot()
                log.write(f"stopped by signal {stop.signum} at step {step}; state saved, resume with --resume {run_dir}")
                return TrainResult(run_dir, step, epoch, published, stopped_by=stop.signum or signal.SIGTERM)
            if batch >= len(batches):
                epoch, batch = epoch + 1, 0
                if step < total:  # the last epoch ends below, with a publish
                    end_of_epoch(publish_now=bool(cfg.publish_every) and epoch % cfg.publish_every == 0)
        end_of_epoch(publish_now=True)
        snapshot()
        return TrainResult(run_dir, step, epoch, published)
    finally:
        stop.restore()
        log.close()

