"""TrainConfig: every knob of a training run, with the seed's hyperparameters as defaults."""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models_core.checkpoint import WEIGHT_DTYPES
from models_core.losses import DEFAULT_BETA_KL
from models_core.precision import PRECISIONS
from models_core.kinds import get_kind

# The seed's recipes. VAE/AE: Adam 5e-4, batch 64, 100 epochs. GAN: Adam 2e-4 betas (0.5, 0.999),
# batch 32, grad-norm clip 1.0, 200 epochs, and an EMA of G (standard since Karras et al. 2018).
# The VAE also clips at 1.0 (the seed's GAN value): unclipped, the seed VAE diverged at epoch 62 of a
# GPU run (window KL ~1e3 -> 1e11 nats, every value finite) and learned slower before that
# (valid PSNR 19.5 vs 22.1 dB at epoch 20, same data and seed).
# The VAE also warms its LR up over 100 steps, and its log-variance head starts at zero (models_core/vae.py):
# Adam's first steps move each of the head's 16,384 input weights by ~lr in one direction, which shifts
# log σ² by several units per step, and exp() made the seed VAE's KL 5.9e11 nats at step 3.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "ae": dict(epochs=100, batch_size=64, lr=5e-4, betas=(0.9, 0.999), grad_clip=0.0, ema=False, lr_warmup=0),
    "vae": dict(epochs=100, batch_size=64, lr=5e-4, betas=(0.9, 0.999), grad_clip=1.0, ema=False, lr_warmup=100),
    "gan": dict(epochs=200, batch_size=32, lr=2e-4, betas=(0.5, 0.999), grad_clip=1.0, ema=True, lr_warmup=0),
}

# Keys a resumed run may change; everything else must stay as the run started.
RESUMABLE_OVERRIDES = {"data", "epochs", "max_steps", "time_limit", "lr_warmdown", "ckpt_every", "publish_every", "log_every", "device", "progress"}  # data: checked by fingerprint


def default_runs_dir() -> Path:
    return Path(os.environ.get("FACEGEN_RUNS_DIR", "runs"))


def training_store() -> Path:
    """Where training, evaluation, directions and encoders publish by default: a store of the trainer's
    own, so that a first smoke run never becomes the version the service prefers. Only
    `promote` writes into the served store."""
    return Path(os.environ.get("FACEGEN_TRAIN_CHECKPOINTS") or default_runs_dir() / "checkpoints")


def served_store() -> Path:
    # The variable the service reads, so promote and the service agree on one store.
    return Path(os.environ.get("FACEGEN_CHECKPOINT_ROOT", "checkpoints"))


TRAINING_STORE_HELP = "checkpoint store (default: $FACEGEN_TRAIN_CHECKPOINTS or RUNS_DIR/checkpoints, not the served store)"


@dataclass
class TrainConfig:
    model: str  # ae | vae | gan
    data: Path
    preset: str = "seed"
    name: str | None = None  # name in the checkpoint store; defaults to the model kind
    conv_impl: str = "native"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    betas: tuple[float, float] | None = None
    beta_kl: float = DEFAULT_BETA_KL
    grad_clip: float | None = None  # max grad norm; 0 disables
    lr_warmup: int | None = None  # steps of a linear LR rise at the start (VAE 100: see MODEL_DEFAULTS' note)
    lr_warmdown: float = 0.0  # epochs at the end of the run over which the LR falls linearly to 0; 0 = constant (the seed's)
    ema: bool | None = None
    ema_decay: float = 0.999
    flip: bool = True
    augment: bool = False  # GAN: DiffAugment on everything D sees (trainer/augment.py)
    seed: int = 0
    init_from: Path | None = None  # a published version's folder whose weights the run starts from
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16
    compile: bool = False
    max_steps: int | None = None
    time_limit: float | None = None  # minutes of this invocation's training; then publish and stop
    ckpt_every: int = 500  # steps between resume-state snapshots
    publish_every: int = 0  # epochs between published versions; 0 = only at the end
    log_every: int = 50
    pca_samples: int = 5000
    publish_dtype: str = "float32"
    runs_dir: Path = field(default_factory=default_runs_dir)
    checkpoints: Path = field(default_factory=training_store)
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        spec = get_kind(self.model)
        if self.preset not in spec.presets:
            raise ValueError(f"unknown preset {self.preset!r} for {self.model}; choose from {', '.join(spec.presets)}")
        for key, value in MODEL_DEFAULTS[self.model].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.betas = tuple(self.betas)
        self.data, self.runs_dir, self.checkpoints = Path(self.data), Path(self.runs_dir), Path(self.checkpoints)
        self.init_from = Path(self.init_from) if self.init_from else None
        self.name = self.name or self.model
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.publish_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"publish_dtype must be float32, bfloat16 or float16, got {self.publish_dtype!r}")
        if self.augment and self.model != "gan":
            raise ValueError(f"--augment is for --model gan (it augments what the discriminator sees), not {self.model}")
        if self.lr_warmdown < 0:
            raise ValueError(f"lr_warmdown must be >= 0 epochs, got {self.lr_warmdown}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise ValueError(f"time_limit must be > 0 minutes, got {self.time_limit}")
        for key in ("epochs", "batch_size", "ckpt_every", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")

    @property
    def network_config(self):
        return dataclasses.replace(get_kind(self.model).presets[self.preset], conv_impl=self.conv_impl)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(data=str(self.data), runs_dir=str(self.runs_dir), checkpoints=str(self.checkpoints), betas=list(self.betas),
                 init_from=str(self.init_from) if self.init_from else None)
        d["network"] = self.network_config.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
