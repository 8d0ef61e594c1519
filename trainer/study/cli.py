"""python -m trainer study: every claim of the seed study measured on your checkpoints, as a report.

Writes OUT/README.md (for each claim the seed's words, our figures, a plot and a verdict with its
threshold), one PNG plot per claim and OUT/study.json with every number. Needs one AE, one VAE and
one GAN in the checkpoint root, a prepared dataset with held-out faces (attribute labels for claim
5), and for claim 7 run folders with metrics.jsonl (--runs). FID, KID and path lengths use the
standard Inception network (pip install '.[eval]'); generated sets' features are cached (--cache),
so a rerun with the same models, N and seed skips them. On 2 CPU cores Inception runs at ~6 images
per second: N sets the time, about 10 sets of N images in all.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from models_core.checkpoint import CheckpointError, CheckpointStore
from models_core.device import resolve_device
from models_core.figures import Renderer
from models_core.precision import PRECISIONS, choose_precision, cpu_flags
from trainer.config import TRAINING_STORE_HELP, default_runs_dir, training_store
from trainer.data import PackedFaces, SourceError
from trainer.fid import InceptionUnavailable, load_inception
from trainer.study import claims, plots
from trainer.study.report import write_report

BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
MEASURES = {
    "1": (claims.claim1_variance, lambda p, f, path: plots.variance(p, path)),
    "2": (claims.claim2_compression, lambda p, f, path: plots.compression(p, path)),
    "3": (claims.claim3_slerp, plots.interpolation),
    "4": (claims.claim4_structure, lambda p, f, path: plots.structure(p, path) if p else None),
    "5": (claims.claim5_semantics, lambda p, f, path: plots.semantics(p, path) if "vae" in p else None),
    "6": (claims.claim6_sharpness, lambda p, f, path: plots.sharpness(p, path)),
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (prepare-data) with held-out faces")
    p.add_argument("--checkpoints", type=Path, default=training_store(),
                   help=TRAINING_STORE_HELP + "; --checkpoints checkpoints studies the bundled models")
    p.add_argument("--ae", default="ae", help="AE model name in the store (default: %(default)s)")
    p.add_argument("--vae", default="vae", help="VAE model name (default: %(default)s)")
    p.add_argument("--gan", default="gan", help="GAN model name (default: %(default)s)")
    p.add_argument("--runs", type=Path, default=default_runs_dir(), help="run folders whose metrics.jsonl claim 7 "
                   "plots: the newest VAE and GAN runs there (default: $FACEGEN_RUNS_DIR or runs/)")
    p.add_argument("--out", type=Path, default=Path("docs/study"), help="report folder (default: %(default)s)")
    p.add_argument("--n", type=int, default=400, help="faces and samples per set (default: %(default)s; FID is biased "
                   "upwards at small N, so compare FIDs only within one report)")
    p.add_argument("--ppl-paths", type=int, default=64, help="paths per perceptual-path-length estimate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every sample, path and subset (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="decoding precision (default: %(default)s, "
                   "so the figures do not depend on the chip)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--cache", type=Path, help="folder for Inception features of generated sets (default: RUNS/study-cache)")
    p.add_argument("--no-fid", action="store_true", help="skip everything that needs the Inception network")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def load_models(args) -> dict[str, Renderer]:
    store = CheckpointStore(args.checkpoints)
    device = resolve_device(args.device)
    precision = choose_precision(args.precision, device)
    models = {}
    for kind in ("ae", "vae", "gan"):
        name = getattr(args, kind)
        ckpt = store.load(name, device=device)
        if ckpt.manifest.kind != kind:
            raise CheckpointError(f"{name} v{ckpt.manifest.version} in {args.checkpoints} is a {ckpt.manifest.kind}, not a "
                                  f"{kind}; name the {kind.upper()} with --{kind}")
        models[kind] = Renderer(ckpt, device, precision)
    return models


def describe_version(manifest) -> str:
    """'gan v6 (trained to epoch 12, step 5988, from gan/000005's weights)': a run started with
    --init-from counts its epochs from 0, so the start says how much training lies behind them."""
    how = f"trained to epoch {manifest.epoch}, step {manifest.step}"
    start = manifest.provenance.get("init_from")
    if start:
        how += f", from {Path(start).parent.name}/{Path(start).name}'s weights"
    return f"{manifest.name} v{manifest.version} ({how})"


def setup_facts(args, study: claims.Study, argv: list[str]) -> dict:
    data = study.data
    return {
        "command": "python -m trainer study " + " ".join(argv),
        "models": {k: describe_version(r.ckpt.manifest) for k, r in study.models.items()},
        "data": f"{data.root.name}: " + ", ".join(f"{s} {len(i)}" for s, i in data.splits.items()) +
                f" faces (fingerprint {data.fingerprint[:12]}); PCA fitted on {data.held_out()}, scored on {data.held_out(scoring=True)}",
        "N per set": args.n, "PPL paths": args.ppl_paths, "seed": args.seed, "precision": args.precision,
        "Inception (FID, KID, PPL)": "yes" if study.inception is not None else "no (--no-fid or not installed)",
        "hardware": f"{cpu_name()}, {torch.get_num_threads()} threads, bf16: {'yes' if cpu_flags() & BF16_FLAGS else 'no'}",
    }


def main(argv: list[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.n < 16 or args.ppl_paths < 4:
        p.error("--n must be at least 16 and --ppl-paths at least 4")
    started = time.monotonic()
    try:
        models = load_models(args)
        data = PackedFaces.open(args.data)
        inception = None if args.no_fid else load_inception(None, "cpu")
    except (CheckpointError, SourceError, InceptionUnavailable) as e:
        print(f"error: {e}" + (" (or pass --no-fid)" if isinstance(e, InceptionUnavailable) else ""), file=sys.stderr)
        return 1
    study = claims.Study(models, data, args.n, args.seed, inception, args.cache or args.runs / "study-cache",
                         args.ppl_paths, args.progress)
    args.out.mkdir(parents=True, exist_ok=True)
    results, written = {}, {}
    for number, (measure, plot) in [*MEASURES.items(), ("7", (lambda s: claims.claim7_dynamics(args.runs), None))]:
        t0 = time.monotonic()
        figures, plot_data, verdict = measure(study)
        path = (plot or (lambda p, f, path: plots.dynamics(p, path)))(plot_data, figures, args.out / f"claim{number}.png")
        if path is not None:
            written[number] = path.name
        results[number] = {"figures": figures, "verdict": verdict.to_dict()}
        print(f"claim {number}: {verdict.verdict} ({verdict.why}) [{time.monotonic() - t0:.0f} s]", flush=True)
    setup = setup_facts(args, study, argv)
    setup["time"] = (f"{time.monotonic() - started:.0f} s, with {study.cache_hits} of "
                     f"{study.cache_hits + study.cache_misses} generated sets' Inception features from the cache")
    write_report(args.out, setup, results, written)
    print(f"wrote {args.out / 'README.md'}, {args.out / 'study.json'} and {len(written)} plots in {setup['time']}")
    return 0
