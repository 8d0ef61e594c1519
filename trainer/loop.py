"""The training loop: batches -> task.train_step -> EMA -> log -> snapshot -> publish."""

import enum
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models_core.checkpoint import WEIGHT_DTYPES, CheckpointError, CheckpointStore
from models_core.device import resolve_device
from models_core.folding import serving_copy
from models_core.images import decode_images, encode_png, from_uint8, image_grid, to_uint8
from models_core.latent import PcaBasis, sample_prior
from models_core.precision import choose_precision
from models_core.kinds import get_kind, network_differences
from trainer.bases import ganspace_basis, latent_pca
from trainer.config import TrainConfig
from trainer.data import FaceBatches, PackedFaces
from trainer.distributed import Dist, all_gather_tensor, init_distributed, max_over_ranks, shutdown
from trainer.ema import EMA
from trainer.log import RunLog
from trainer.runs import create_run_dir, write_config
from trainer.schedule import EndPlanner, lr_at, planned_warmdown, warmup_factor
from trainer.state import STATE_FILE, load_training_state, save_training_state
from trainer.tasks import load_optimizer_state, make_task


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


def pick_device(name: str, ranks: Dist) -> torch.device:
    """The device named by --device; under torchrun plain 'cuda' is this rank's GPU."""
    try:
        device = resolve_device(name)
    except ValueError as e:
        raise TrainingError(f"--device: {e}") from None
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank) if device.index is None else device
        torch.cuda.set_device(device)
    return device


def train(cfg: TrainConfig, resume_dir: Path | None = None) -> TrainResult:
    ranks = init_distributed("cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        return Trainer(cfg, ranks).run(resume_dir)
    finally:
        shutdown(ranks)


def sudden_jumps(before: dict[str, float], now: dict[str, float], factor: float = 100.0) -> list[str]:
    """Metrics whose window mean grew more than `factor`-fold in magnitude since the last window.

    A diverging run can stay finite for thousands of steps (a VAE's KL went from ~1e3 to 1e11
    nats), so the non-finite check alone would let it burn its whole budget unnoticed.
    """
    return [k for k, v in now.items()
            if k in LOSSES and abs(before.get(k, 0.0)) > 1e-8 and abs(v) > factor * abs(before[k])]


# What can diverge; D(x) and D(G(z)) are probabilities, and a hundredfold rise from near 0 is no alarm.
LOSSES = frozenset({"loss", "recon", "kl", "loss_D", "loss_G"})


class Stop(enum.IntEnum):
    """Why training left its loop early, if it did; ranks agree on the largest."""

    NOT = 0
    OUT_OF_TIME = 1
    SIGNALLED = 2


class MetricWindow:
    """Sums of the step metrics since the last log line, reduced to means when it is written."""

    def __init__(self, device: torch.device, step: int):
        self.device, self.last_good_step = device, step
        self.reset(step)

    def reset(self, step: int) -> None:
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        self.steps, self.t0, self.last_good_step = 0, time.perf_counter(), step

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        self.steps += 1
        for k, v in metrics.items():
            self.sums[k] += v.float()

    def means(self) -> dict[str, float]:
        return {k: (v / self.steps).item() for k, v in self.sums.items()}


def refuse_broken_compile(cfg: TrainConfig, device: torch.device, precision) -> None:
    """torch.compile's vectorised bf16 CPU code (torch 2.14.1) returns NaN gradients for the DCGAN
    generator's first block (Linear -> BatchNorm -> ReLU -> ConvTranspose2d) on the very first step,
    where eager and the aot_eager backend are finite; the AE and VAE train. Said before the data loads
    and the compile runs, instead of a non-finite loss a minute later."""
    if cfg.compile and cfg.model == "gan" and device.type == "cpu" and precision.dtype == torch.bfloat16:
        raise TrainingError(
            "--compile with bf16 on the CPU makes the GAN's generator gradients NaN at the first step (a bug "
            "in torch.compile's CPU code), and compiling D alone was no faster than eager (97 vs 103 img/s on 2 AMX "
            "cores). Leave --compile off, or add --precision fp32 to compile in fp32")


class Trainer:
    """One run: built from a config, optionally resumed from a run folder, then `run()`."""

    def __init__(self, cfg: TrainConfig, ranks: Dist):
        self.cfg, self.ranks = cfg, ranks
        self.device = pick_device(cfg.device, ranks)
        self.precision = choose_precision(cfg.precision, self.device)
        refuse_broken_compile(cfg, self.device, self.precision)
        torch.manual_seed(cfg.seed + ranks.rank)  # distinct noise per rank; weights are broadcast from rank 0
        self.data = PackedFaces.open(cfg.data)
        self.batches = FaceBatches(self.data.tensor("train", self.device), cfg.batch_size, cfg.seed, cfg.flip, ranks.rank, ranks.world)
        self.held_out = self.data.tensor(self.data.held_out(), "cpu", limit=cfg.pca_samples)
        self.task = make_task(cfg, self.device, self.precision.autocast(self.device), ranks)
        self.ema = EMA(self.task.inference_net, cfg.ema_decay) if cfg.ema else None
        self.init_note: str | None = None  # what a new run took from --init-from, for the log
        self.store = CheckpointStore(cfg.checkpoints)
        self.fixed_z = sample_prior(64, self.task.inference_net.latent_dim, torch.Generator().manual_seed(cfg.seed)).to(self.device)
        self.step = self.epoch = self.batch = 0
        self.lr = self.current_lr = cfg.lr
        self.published: list[int] = []
        self.complete = False  # every planned step trained and the final version published
        self.last: dict[str, torch.Tensor] = {}
        self.previous_means: dict[str, float] = {}  # the last logged window, to notice divergence
        self.run_dir: Path | None = None

    # --- the run -----------------------------------------------------------------------------

    def start_from(self, vdir: Path) -> str:
        """Load a published version's weights into the task (--init-from); what was done, for the log."""
        try:
            ckpt = CheckpointStore.load_folder(vdir)
        except CheckpointError as e:
            raise TrainingError(f"--init-from: {e}") from None
        m, cfg = ckpt.manifest, self.cfg
        if m.kind != cfg.model:
            raise TrainingError(f"--init-from {vdir} is a {m.kind} version; this run trains --model {cfg.model}")
        differences = network_differences(m.config, cfg.network_config.to_dict())
        if differences:
            differ = ", ".join(f"{k} {there} there, {here} here" for k, (there, here) in differences.items())
            raise TrainingError(f"--init-from {vdir}: its network is not --preset {cfg.preset}'s ({differ}); "
                                "give the --preset it was trained with")
        taken = self.task.start_from(ckpt)
        if self.ema:
            self.ema = EMA(self.task.inference_net, cfg.ema_decay)  # the average starts at the loaded weights
        other_data = ", trained on other data" if m.data_fingerprint != self.data.fingerprint else ""
        return (f"starting from {m.name} v{m.version} ({vdir}, its step {m.step}{other_data}): {taken}; "
                f"the optimizer state is fresh")

    def run(self, resume_dir: Path | None = None) -> TrainResult:
        total = self.open_run(resume_dir)
        if self.complete and self.step >= total:
            self.log.write(f"run {self.run_dir} is already complete: step {self.step} of {total}, published as "
                           f"{self.cfg.name} v{self.published[-1]}; nothing to do (to train on, resume with more --epochs)")
            self.log.close()
            return TrainResult(self.run_dir, self.step, self.epoch, [])
        self.announce(total, resumed=resume_dir is not None)
        stop = StopFlag()  # until the end: a first Ctrl-C while the last version is written waits for it
        try:
            why = self.train_steps(total, stop)
            if why == Stop.SIGNALLED:
                self.snapshot()
                self.log.write(f"stopped by signal {stop.signum} at step {self.step}; state saved, "
                               f"resume with --resume {self.run_dir}")
                return TrainResult(self.run_dir, self.step, self.epoch, self.published, stopped_by=stop.signum or signal.SIGTERM)
            if why == Stop.OUT_OF_TIME:
                self.snapshot()  # before the publish: a lease that ends while the basis is fitted loses no steps
                self.log.write(f"--time-limit of {self.cfg.time_limit:g} min reached at step {self.step}; publishing, "
                               f"resume with --resume {self.run_dir}")
            self.write_outputs(publish_now=True)
            self.complete = self.step >= total
            self.snapshot()
            return TrainResult(self.run_dir, self.step, self.epoch, self.published)
        finally:
            stop.restore()
            self.log.close()

    def open_run(self, resume_dir: Path | None) -> int:
        """The run folder (resumed or new) and its log; the number of steps the run ends at."""
        cfg, ranks = self.cfg, self.ranks
        if resume_dir is not None:
            self.run_dir = resume_dir
            self.restore(load_training_state(resume_dir / STATE_FILE))
        else:
            if cfg.init_from:  # a resumed run has these weights, and more, in its state
                self.init_note = self.start_from(cfg.init_from)
            if ranks.is_main:
                self.run_dir = create_run_dir(cfg.runs_dir, cfg.name)
        if ranks.is_main:
            write_config(self.run_dir, cfg.to_dict() | {"resolved_precision": self.precision.to_dict()})
        total = min(cfg.epochs * len(self.batches), cfg.max_steps or float("inf"))
        self.log = RunLog(self.run_dir, total, self.step, enabled=ranks.is_main, progress=cfg.progress)
        return total

    def announce(self, total: int, resumed: bool) -> None:
        cfg = self.cfg
        where = f"resuming from step {self.step} of {total} (epoch {self.epoch})" if resumed else f"{total} steps"
        self.log.write(f"run {self.run_dir}: {cfg.model} ({cfg.preset}) on {self.device} in {self.precision.name} "
                       f"({self.precision.reason}), {len(self.batches)} steps/epoch, {where}")
        if self.init_note:
            self.log.write(self.init_note)
        self.log.write(self.task.metric_legend)

    def train_steps(self, total: int, stop: StopFlag) -> "Stop":
        """Epochs until `total` steps, a signal or the time limit; sample grids (and versions, when due)
        at each epoch's end but the last, which `run` publishes."""
        cfg = self.cfg
        self.window = MetricWindow(self.device, self.step)
        started = time.monotonic()
        self.deadline = started + 60 * cfg.time_limit if cfg.time_limit else None
        self.log.deadline = self.deadline
        self.end_planner = EndPlanner(started, self.deadline) if self.deadline else None
        self.warming_down = False
        why = Stop.NOT
        while self.step < total and why == Stop.NOT:
            why = self.train_epoch(total, stop)
            if why == Stop.SIGNALLED:
                break
            if self.batch >= len(self.batches):
                self.epoch, self.batch = self.epoch + 1, 0
                if self.step < total and why == Stop.NOT:
                    self.write_outputs(publish_now=bool(cfg.publish_every) and self.epoch % cfg.publish_every == 0)
        return why

    def train_epoch(self, total: int, stop: StopFlag) -> "Stop":
        """Steps until the epoch ends or `total` is reached (Stop.NOT), or why it left early."""
        cfg = self.cfg
        for x in self.batches.epoch(self.epoch, start=self.batch):
            self.set_lr(total)
            self.last = self.task.train_step(x)
            if self.ema:
                self.ema.update(self.task.inference_net)
            self.step, self.batch = self.step + 1, self.batch + 1
            self.window.add(self.last)
            self.log.advance()
            if self.step % cfg.log_every == 0:
                self.flush_metrics()
            if self.step % cfg.ckpt_every == 0:
                self.snapshot()
            why = Stop.SIGNALLED if stop.signum is not None else Stop.OUT_OF_TIME if self.past_deadline() else Stop.NOT
            why = Stop(max_over_ranks(why, self.ranks, self.device))
            if why != Stop.NOT:
                return why
            if self.step >= total:
                break
        return Stop.NOT

    def set_lr(self, total: int) -> None:
        warmdown_steps = round(self.cfg.lr_warmdown * len(self.batches))
        end = total
        if warmdown_steps and self.end_planner is not None:
            end = self.planned_end(total)
            since = self.end_planner.since
            warmdown_steps = planned_warmdown(warmdown_steps, end, since[0] if since else None)
        lr = lr_at(self.step, end, self.cfg.lr, warmdown_steps)
        # Under --time-limit the planned end moves with the measured speed; the LR never climbs back up.
        self.lr = min(lr, self.lr) if self.warming_down else lr
        self.warming_down = self.lr < self.cfg.lr
        self.current_lr = self.lr * warmup_factor(self.step, self.cfg.lr_warmup)
        for opt in self.task.optimizers().values():
            for group in opt.param_groups:
                group["lr"] = self.current_lr

    def planned_end(self, total: int) -> int:
        if self.end_planner is None:
            return total
        end = self.end_planner.end(total, self.step, time.monotonic())
        return -max_over_ranks(-end, self.ranks, self.device)  # the earliest: every rank sets the same LR

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def flush_metrics(self) -> None:
        """Log the window's mean losses; stop with a clear error if any went non-finite."""
        w = self.window
        if not w.steps:
            return
        means = w.means()
        bad = [k for k, v in means.items() if v != v or abs(v) == float("inf")]
        if bad:
            where = self.run_dir / STATE_FILE if self.run_dir else "the run folder"
            raise TrainingError(
                f"{', '.join(bad)} became non-finite between steps {w.last_good_step} and {self.step}; "
                f"stopping. The last good resume state is in {where}. Try a lower --lr or --precision fp32."
            )
        jumps = sudden_jumps(self.previous_means, means)
        if jumps:
            self.log.write(f"warning: {', '.join(f'{k} {self.previous_means[k]:.4g} -> {means[k]:.4g}' for k in jumps)} "
                           f"between steps {w.last_good_step} and {self.step}: the run may be diverging "
                           f"({self.divergence_advice()}; resume state in {self.run_dir})")
        self.previous_means = dict(means)
        means["img_per_s"] = w.steps * self.cfg.batch_size * self.ranks.world / max(time.perf_counter() - w.t0, 1e-9)
        means["lr"] = self.current_lr
        self.log.scalars(self.step, self.epoch, means)
        w.reset(self.step)

    def divergence_advice(self) -> str:
        lower = f"try a lower --lr (now {self.cfg.lr:g})"
        return f"{lower}, or --grad-clip 1.0" if not self.cfg.grad_clip else f"{lower}; gradients are already clipped at {self.cfg.grad_clip:g}"

    # --- resume state ------------------------------------------------------------------------

    def snapshot(self) -> None:
        self.flush_metrics()
        rng = self.gather_rng()  # every rank takes part; rank 0 writes
        if not self.ranks.is_main:
            return
        save_training_state(self.run_dir / STATE_FILE, {
            "step": self.step, "epoch": self.epoch, "batch": self.batch, "published": self.published,
            "modules": {k: m.state_dict() for k, m in self.task.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.task.optimizers().items()},
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng, "config": self.cfg.to_dict(), "data_fingerprint": self.data.fingerprint,
            "complete": self.complete,
        })

    def gather_rng(self) -> dict:
        """The RNG state of every rank, so that a resumed run draws the same noise on each."""
        cuda = self.device.type == "cuda"
        return {
            "cpu_ranks": all_gather_tensor(torch.get_rng_state(), self.ranks, self.device),
            "cuda_ranks": all_gather_tensor(torch.cuda.get_rng_state(self.device), self.ranks, self.device) if cuda else None,
        }

    def restore(self, state: dict) -> None:
        if state["data_fingerprint"] != self.data.fingerprint:
            raise TrainingError(f"{self.cfg.data} is not the dataset run {self.run_dir} was trained on (fingerprint differs)")
        for key, module in self.task.modules().items():
            module.load_state_dict(state["modules"][key])
        for key, opt in self.task.optimizers().items():
            load_optimizer_state(opt, state["optimizers"][key])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        self.published = list(state["published"])
        self.complete = state.get("complete", False)
        self.restore_rng(state["rng"])

    def restore_rng(self, rng: dict) -> None:
        ranks = self.ranks
        cpu, cuda = rng["cpu_ranks"], rng["cuda_ranks"]
        # A state from a run with another number of ranks: rank 0 continues exactly, the others reseed.
        rank = ranks.rank if len(cpu) == ranks.world else 0 if ranks.is_main else None
        if rank is None:
            torch.manual_seed(self.cfg.seed + ranks.rank + 7919 * self.step)
            return
        torch.set_rng_state(cpu[rank])
        if self.device.type == "cuda" and cuda is not None:
            torch.cuda.set_rng_state(cuda[rank], self.device)

    # --- what a run writes -------------------------------------------------------------------

    def fit_basis(self, net) -> PcaBasis:
        """What a version stores for /pca-grid: GANSpace directions, or the PCA of held-out latents."""
        if self.cfg.model == "gan":
            return ganspace_basis(net, self.device, n_samples=self.cfg.pca_samples, seed=self.cfg.seed)
        return latent_pca(net, self.held_out, self.device)

    def publish(self, net, basis: PcaBasis) -> None:
        cfg = self.cfg
        version = self.store.publish(
            cfg.name, cfg.model, cfg.network_config, net.state_dict(), step=self.step, epoch=self.epoch,
            data_fingerprint=self.data.fingerprint, metrics={k: float(v) for k, v in self.last.items()},
            extras=basis.to_tensors() | self.task.publish_extras(WEIGHT_DTYPES[cfg.publish_dtype]),
            dtype=WEIGHT_DTYPES[cfg.publish_dtype], provenance={"run": str(self.run_dir.resolve())}
            | ({"init_from": str(cfg.init_from.resolve())} if cfg.init_from else {}),
        )
        self.published.append(version)
        self.log.write(f"published {cfg.name} v{version} (step {self.step}) to {self.store.path(cfg.name, version)}")

    @torch.no_grad()
    def write_images(self, net, basis: PcaBasis | None) -> None:
        """The service's /sample?n=64&seed=SEED of these weights (same latents, network copy and precision),
        and for AE/VAE the reconstructions of 32 held-out faces."""
        grids = {}
        z = self.fixed_z
        if basis is not None:  # AE/VAE: sample as the service does, from the Gaussian of held-out latents
            z = basis.sample(len(z), torch.Generator().manual_seed(self.cfg.seed)).to(self.device)
        served, autocast = serving_copy(net, self.precision.dtype), self.precision.autocast(self.device)
        grids["samples"] = image_grid(decode_images(served.decode, z, self.device, autocast), nrow=8)
        if get_kind(self.cfg.model).has_encoder:
            faces = from_uint8(self.held_out[:32].to(self.device)).permute(0, 3, 1, 2)
            with torch.inference_mode(), autocast():
                latents = served.embed(faces).float()
            recon = decode_images(served.decode, latents, self.device, autocast)
            grids["reconstructions"] = image_grid(torch.cat([to_uint8(faces.cpu()), recon]), nrow=8)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        for tag, grid in grids.items():
            self.log.image(tag, self.step, grid)
            suffix = "" if tag == "samples" else f"_{tag}"
            (self.run_dir / "samples" / f"step{self.step:08d}{suffix}.png").write_bytes(encode_png(grid))

    def write_outputs(self, publish_now: bool) -> None:
        """Sample grids, and a published version when one is due (at an epoch's end, and when the run
        ends or runs out of time); the basis is fitted once for both."""
        if publish_now:
            self.flush_metrics()
        if not self.ranks.is_main:
            return
        net = self.ema.net if self.ema else self.task.inference_net
        was_training = net.training
        net.eval()
        has_encoder = get_kind(self.cfg.model).has_encoder
        basis = self.fit_basis(net) if publish_now or has_encoder else None
        self.write_images(net, basis if has_encoder else None)
        if publish_now:
            self.publish(net, basis)
        net.train(was_training)
