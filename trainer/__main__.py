"""python -m trainer [train]: train (the default), prepare-data, evaluate, promote, directions, gan-encoder, study. Each has its own --help."""

import argparse
import importlib
import sys
from pathlib import Path

from models_core.checkpoint import WEIGHT_DTYPES
from models_core.conv_transpose import CONV_IMPLS
from models_core.dcgan import DCGAN_PRESETS
from models_core.precision import PRECISIONS
from models_core.vae import VAE_PRESETS
from trainer.config import MODEL_DEFAULTS, RESUMABLE_OVERRIDES, TRAINING_STORE_HELP, TrainConfig, default_runs_dir

TRAIN_DESCRIPTION = """\
Train an autoencoder, VAE or DCGAN on a prepared CelebA-64 dataset and publish versions into the
trainer's checkpoint store. Defaults are the seed study's recipes (each option below gives them).

Other commands:
  python -m trainer prepare-data SOURCE --out DIR   pack CelebA into a 64×64 uint8 dataset
  python -m trainer evaluate --model NAME           score a published version
  python -m trainer promote --model NAME --from DIR  copy a version into the served store
  python -m trainer directions --model NAME --data DIR  fit attribute directions (smile, ...) for a version
  python -m trainer gan-encoder --model NAME --data DIR  train an encoder that starts a GAN's projections
  python -m trainer study --data DIR                the seed study's claims measured: report, plots, verdicts

Multi-GPU: torchrun --standalone --nproc_per_node=N -m trainer --model gan --data DIR
Multi-node: torchrun --nnodes=M --nproc_per_node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT -m trainer ...
"""


def default(key: str):
    return TrainConfig.__dataclass_fields__[key].default


def per_model(key: str) -> str:
    """A per-model default as help text: 'AE 0, VAE 100, GAN 0'."""
    show = lambda v: " ".join(map(str, v)) if isinstance(v, tuple) else "on" if v is True else "off" if v is False else str(v)  # noqa: E731
    return ", ".join(f"{model.upper()} {show(values[key])}" for model, values in MODEL_DEFAULTS.items())


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=TRAIN_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODEL_DEFAULTS), help="what to train; required unless --resume RUN_DIR, "
                   "whose run says it")
    p.add_argument("--data", type=Path, help="prepared dataset folder (from prepare-data); required unless --resume")
    p.add_argument(
        "--preset",
        choices=list(dict.fromkeys([*VAE_PRESETS, *DCGAN_PRESETS])),
        help="network size: seed (the study's, default), medium (AE/VAE at 3/4 width: the bundled AE up to v4), small (CPU runs), tiny (tests)",
    )
    p.add_argument("--name", help="model name in the checkpoint store (default: the model kind)")
    p.add_argument("--conv-impl", choices=CONV_IMPLS, help=f"transposed-conv kernel (default: {default('conv_impl')})")
    h = p.add_argument_group("hyperparameters (defaults depend on --model)")
    h.add_argument("--epochs", type=int, help=f"passes over the training split ({per_model('epochs')})")
    h.add_argument("--batch-size", type=int, help=f"images per step and per GPU ({per_model('batch_size')})")
    h.add_argument("--lr", type=float, help=f"Adam learning rate ({per_model('lr')})")
    h.add_argument("--lr-warmup", type=int, metavar="STEPS", help="let the learning rate rise linearly over the first "
                   f"STEPS steps ({per_model('lr_warmup')}; without it the seed VAE's KL reached 1e11 in its first steps)")
    h.add_argument("--lr-warmdown", type=float, metavar="EPOCHS",
                   help="let the learning rate fall linearly to 0 over the last EPOCHS epochs of the run (default "
                        f"{default('lr_warmdown'):g}: constant, the seed's); may be set when resuming, to end a run with a warm-down. Under --time-limit "
                        "the warm-down ends at the time limit when that comes first (planned from the speed so far)")
    h.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"), help=f"Adam betas ({per_model('betas')})")
    h.add_argument("--beta-kl", type=float, help=f"weight of the KL term for --model vae (default {default('beta_kl')})")
    h.add_argument("--grad-clip", type=float, help=f"max gradient norm, 0 disables ({per_model('grad_clip')})")
    h.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None, help=f"publish an EMA of the weights ({per_model('ema')})")
    h.add_argument("--ema-decay", type=float, help=f"EMA decay per step (default {default('ema_decay')})")
    h.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="GAN: DiffAugment (colour, translation, cutout) on every image the discriminator sees, real "
                        "or fake; against a discriminator that memorises a small dataset (default off: the seed's recipe)")
    h.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips (default on)")
    h.add_argument("--seed", type=int, help=f"seed for init, data order and noise (default {default('seed')})")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", help="auto (CUDA if present, default), cpu, cuda or cuda:N")
    r.add_argument("--precision", choices=PRECISIONS, help="auto (default): bf16 autocast where the chip has native bf16 "
                   "(CUDA GPUs that support it, CPUs with AVX512-BF16 or AMX), fp32 elsewhere; the choice and why are logged")
    r.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the networks")
    r.add_argument("--max-steps", type=int, help="stop after this many steps in total (default: run all epochs)")
    r.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="train at most this many minutes, then publish and save the resume state as at the end "
                        "(for a lease or a session of fixed length; --resume goes on from there)")
    r.add_argument("--log-every", type=int, help=f"steps between metric lines (default {default('log_every')})")
    r.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    o = p.add_argument_group("outputs")
    o.add_argument("--runs-dir", type=Path, help="where run folders go (default: $FACEGEN_RUNS_DIR or runs/)")
    o.add_argument("--checkpoints", type=Path, help=TRAINING_STORE_HELP + "; 'promote' copies a version into the served store")
    o.add_argument("--ckpt-every", type=int, help=f"steps between resume-state snapshots (default {default('ckpt_every')})")
    o.add_argument("--publish-every", type=int, help="epochs between published versions; 0 = only at the end (default)")
    o.add_argument("--publish-dtype", choices=sorted(WEIGHT_DTYPES), help=f"dtype of published weights (default {default('publish_dtype')})")
    o.add_argument("--pca-samples", type=int, help=f"held-out faces (AE/VAE) or random z (GAN) for the published PCA basis (default {default('pca_samples')})")
    o.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                   help="continue the latest run of this --name (or RUN_DIR) from its last snapshot")
    o.add_argument("--init-from", type=Path, metavar="VERSION_DIR",
                   help="start a new run from a published version's weights, e.g. checkpoints/gan/000006 (a GAN "
                        "takes its G and D); the optimizer state starts fresh, so a --lr-warmup helps. Step and "
                        "epoch count from 0; the version must have this --model and --preset")
    return p


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """(TrainConfig, resume dir or None). Only options given on the command line override."""
    from trainer.runs import latest_resumable_run, read_config

    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("resume", "model")}
    if args.model is None and args.resume in (None, "latest"):
        parser.error("--model is required (ae, gan or vae), unless --resume names a run folder")
    if args.resume is None:
        if "data" not in given:
            parser.error("--data is required (a folder made by: python -m trainer prepare-data SOURCE --out DIR)")
        return TrainConfig(model=args.model, **given), None

    runs_dir = given.get("runs_dir", default_runs_dir())
    name = given.get("name", args.model)
    run_dir = latest_resumable_run(runs_dir, name) if args.resume == "latest" else Path(args.resume)
    if run_dir is None or not (run_dir / "config.json").is_file():
        parser.error(f"nothing to resume: no run of {name!r} with a saved state under {runs_dir}" if args.resume == "latest"
                     else f"{args.resume} is not a run folder (no config.json)")
    saved = read_config(run_dir)
    if args.model is not None and saved["model"] != args.model:
        parser.error(f"{run_dir} trained --model {saved['model']}, not {args.model}")
    changed = {k for k, v in given.items() if k not in RESUMABLE_OVERRIDES | {"name", "runs_dir"} and str(v) != str(saved.get(k))}
    if changed:
        parser.error(f"cannot change {', '.join('--' + k.replace('_', '-') for k in sorted(changed))} when resuming; "
                     f"allowed: {', '.join('--' + k.replace('_', '-') for k in sorted(RESUMABLE_OVERRIDES))}")
    saved.update({k: v for k, v in given.items() if k in RESUMABLE_OVERRIDES})
    saved["time_limit"] = given.get("time_limit")  # a budget for this invocation, not inherited
    return TrainConfig.from_dict(saved), run_dir


def main_train(argv: list[str]) -> int:
    parser = train_parser()
    args = parser.parse_args(argv)
    try:
        cfg, resume_dir = config_from_args(args, parser)
    except ValueError as e:
        parser.error(str(e))

    from trainer.data import SourceError
    from trainer.loop import TrainingError, train

    try:
        result = train(cfg, resume_dir)
    except (TrainingError, SourceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.stopped_by:
        return 128 + int(result.stopped_by)
    return 0


# The other actions, each a module with its own main(argv) and --help; importing one costs only its own.
SUBCOMMANDS = {
    "prepare-data": "trainer.prepare_cli",
    "evaluate": "trainer.evaluate",
    "promote": "trainer.promote",
    "directions": "trainer.directions",
    "gan-encoder": "trainer.gan_encoder",
    "study": "trainer.study.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    if argv and argv[0] == "train":  # the default action, also spelled as the subcommand it is
        argv = argv[1:]
    return main_train(argv)


if __name__ == "__main__":
    raise SystemExit(main())
