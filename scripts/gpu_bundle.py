"""Train the bundled models on a lent GPU within one call, and bring the best versions back.

On the GPU machine (see ../shared/gpu/README.md for carrying the data there):

    python3 scripts/gpu_bundle.py train --data .gpu/img_align_celeba_64.zip --minutes 7 --deadline 9.5 --out "$OUT"

prepares the data, trains every model side by side on the one GPU (each run stops at --minutes,
or earlier so that the whole call ends by --deadline, and publishes every few epochs), scores the
published versions on the valid split, newest first, until the deadline (PSNR of
reconstructions for AE/VAE, SWD of samples for the GAN: never the test split) and writes to
--out the best version of each model with its run's logs, byte-shuffled and zlib-compressed
(bf16 weights shrink ~30%, which the call's 64 MiB return limit needs), one bundle per model
(NAME.partNN: what does not fit one call's return limit can come back in a second call on the
warm machine), plus summary.json with every version's score. At home:

    python scripts/gpu_bundle.py unpack FILES_AT --to /tmp/gpu
    python -m trainer promote --model vae --from /tmp/gpu/ck_vae   # then evaluate on the test split
"""

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np

from models_core.precision import PRECISIONS

REPO = Path(__file__).resolve().parents[1]
PART_BYTES = 15 * 2**20  # files that come back are at most 16 MiB each
MAGIC = b"FGBUNDLE1"

# model -> how often a run publishes (epochs), and the valid-split score that picks its best version
PUBLISH_EVERY = {"ae": 10, "vae": 10, "gan": 10}
SCORE = {"ae": ("recon_psnr_db", max), "vae": ("recon_psnr_db", max), "gan": ("swd_x1e3_avg", min)}
# Seconds of the call's --deadline kept, after the runs' training budget, for: a run's start-up before
# its clock starts and its last publish and snapshots; scoring; packing.
RUN_OVERHEAD_S, SCORING_S, PACKING_S = 60, 60, 20


def shuffle_bytes(data: bytes, width: int = 2) -> bytes:
    """Byte planes of `width`-byte words: bf16's sign/exponent bytes, together, compress well."""
    padded = data + b"\0" * (-len(data) % width)
    return np.frombuffer(padded, np.uint8).reshape(-1, width).T.tobytes()


def unshuffle_bytes(data: bytes, length: int, width: int = 2) -> bytes:
    return np.frombuffer(data, np.uint8).reshape(width, -1).T.tobytes()[:length]


def pack(paths: dict[str, Path], out: Path, name: str = "bundle") -> list[Path]:
    """Tar `paths` (archive name -> file or folder), shuffle, compress, split into parts under `out`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for arcname, path in paths.items():
            tar.add(path, arcname=arcname)
    raw = buf.getvalue()
    blob = MAGIC + len(raw).to_bytes(8, "little") + zlib.compress(shuffle_bytes(raw), 6)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(blob), PART_BYTES):
        parts.append(out / f"{name}.part{i // PART_BYTES:02d}")
        parts[-1].write_bytes(blob[i : i + PART_BYTES])
    return parts


def unpack(folder: Path, to: Path, name: str = "*") -> None:
    bundles = sorted({p.name.rsplit(".part", 1)[0] for p in folder.glob(f"{name}.part*")})
    if not bundles:
        raise SystemExit(f"no {name}.part* files in {folder}")
    for bundle in bundles:
        unpack_one(sorted(folder.glob(f"{bundle}.part*")), to)


def unpack_one(parts: list[Path], to: Path) -> None:
    folder = parts[0].parent
    blob = b"".join(p.read_bytes() for p in parts)
    if not blob.startswith(MAGIC):
        raise SystemExit(f"{parts[0]} is not a bundle written by this script")
    length = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 8], "little")
    raw = unshuffle_bytes(zlib.decompress(blob[len(MAGIC) + 8 :]), length)
    if len(raw) != length:
        raise SystemExit(f"{folder}: the parts hold {len(raw)} bytes, not {length}: one is missing or cut short")
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(to, filter="data")


def best_version(model: str, scores: dict[int, dict]) -> int:
    key, pick = SCORE[model]
    return pick(scores, key=lambda v: scores[v][key])


def score_newest_first(versions: list[int], score, deadline: float, clock=time.monotonic) -> dict[int, dict]:
    """Scores of the newest versions that fit before `deadline`; the newest is always scored."""
    scores = {}
    for v in sorted(versions, reverse=True):
        if scores and clock() >= deadline:
            break
        scores[v] = score(v)
    return scores


def finish_runs(runs: dict, deadline: float, grace: float = 15.0) -> list[str]:
    """Wait for every run; one still going at `deadline` is stopped (SIGTERM: it saves its state and leaves,
    its published versions stay; killed if it has not left `grace` s later). Returns the runs that failed."""
    failed = []
    for name, (_, p) in runs.items():
        try:
            code = p.wait(timeout=None if deadline == float("inf") else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name}: still running at the deadline; stopping it")
            p.terminate()
            try:
                code = p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                code = p.wait()
        # Stopped on purpose: the trainer's exit after SIGTERM (128 + 15), or the signal itself before it could catch it.
        failed += [name] if code not in (0, 128 + signal.SIGTERM, -signal.SIGTERM) else []
    return failed


def trainer(*args, log: Path | None = None, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "trainer", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return subprocess.run(cmd, env=env, check=True)


def train(args) -> int:
    end = time.monotonic() + 60 * args.deadline if args.deadline else float("inf")
    work, out = args.work, args.out
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    import torch  # noqa: PLC0415 (only this command needs it)

    print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU", "| torch", torch.__version__)
    data = work / "data"
    if not (data / "dataset.json").exists():
        trainer("prepare-data", args.data, "--out", data, "--no-progress")
    for old in [p for p in [work / "runs", *work.glob("ck_*")] if p.exists()]:  # a warm machine keeps /tmp: score only this call's runs
        shutil.rmtree(old)
    t0, runs = time.time(), {}
    minutes = min(args.minutes, (end - RUN_OVERHEAD_S - SCORING_S - PACKING_S - time.monotonic()) / 60)
    if minutes < 0.5:
        raise SystemExit(f"--deadline {args.deadline} min leaves under half a minute to train after preparing the data")
    for spec in args.models:  # "gan", "ae:small", "gan+augment" (a variant: --augment, named gan-augment)
        base, *flags = spec.split("+")
        model, _, preset = base.partition(":")
        name = "-".join([model, *flags])
        runs[name] = model, trainer(
            "--model", model, "--name", name, "--preset", preset or "seed", "--data", data, "--precision", args.precision,
            "--time-limit", f"{minutes:.2f}", "--publish-every", PUBLISH_EVERY[model], "--publish-dtype", "bfloat16",
            "--no-progress", "--log-every", 200, "--runs-dir", work / "runs", "--checkpoints", work / f"ck_{name}",
            "--lr-warmdown", args.lr_warmdown if model in ("ae", "vae") else 0,
            *[f"--{f}" for f in flags], *args.train_args, log=work / f"{name}.log", wait=False)
    failed = finish_runs(runs, end - SCORING_S - PACKING_S)
    print(f"trained {', '.join(runs)} in {time.time() - t0:.0f} s" + (f"; FAILED: {failed}" if failed else ""))

    from models_core.checkpoint import CheckpointStore
    from trainer.data import PackedFaces
    from trainer.evaluate import evaluate

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    faces, summary = PackedFaces.open(data), {}
    for i, (name, (model, _)) in enumerate(runs.items()):
        store = CheckpointStore(work / f"ck_{name}")
        now = time.monotonic()
        share = now + (end - PACKING_S - now) / (len(runs) - i)  # the scoring time left, shared by the runs left
        scores = score_newest_first(store.versions(name), lambda v: evaluate(store, name, v, faces, "valid", args.n, device),
                                    share)
        if not scores:
            continue
        best = best_version(model, scores)
        summary[name] = {"best": best, "by_version": {v: {"epoch": store.read_manifest(name, v).epoch, **s}
                                                      for v, s in scores.items()}}
        print(f"{name}: best v{best} by {SCORE[model][0]} on valid:",
              ", ".join(f"v{v} {s[SCORE[model][0]]:.3f}" for v, s in scores.items()))
        run = next((work / "runs").glob(f"*-{name}"))
        keep = {f"ck_{name}/{name}/{best:06d}": store.path(name, best), f"logs/{name}.log": work / f"{name}.log"}
        keep |= {f"runs/{run.name}/{f}": run / f for f in ("metrics.jsonl", "config.json")}
        # One bundle per run, so that a call can bring back some now and the rest in a second call.
        parts = pack(keep, out, name=name)
        print(f"{name}: packed into {len(parts)} part(s), {sum(p.stat().st_size for p in parts) / 2**20:.1f} MiB")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="prepare, train side by side, score on valid, pack the best")
    t.add_argument("--data", type=Path, required=True, help="a CelebA zip or folder (prepare-data's SOURCE)")
    t.add_argument("--out", type=Path, required=True, help="where the packed parts and summary.json go ($OUT)")
    t.add_argument("--minutes", type=float, default=7.0, help="training budget of every run (default: %(default)s)")
    t.add_argument("--deadline", type=float, help="minutes from the start by which everything is packed: runs train "
                   f"until {RUN_OVERHEAD_S + SCORING_S + PACKING_S} s before it at the latest (start-up, last publish, "
                   "scoring, packing), and versions that do not fit are not scored")
    t.add_argument("--models", nargs="+", default=["gan", "vae", "ae"],
                   help="MODEL[:PRESET][+FLAG]: +augment adds --augment and names the run gan-augment (default: %(default)s)")
    t.add_argument("--lr-warmdown", type=float, default=15, metavar="EPOCHS",
                   help="AE/VAE: the LR falls to 0 over the last EPOCHS epochs before the run's end or --minutes, "
                        "whichever comes first; the GAN keeps the seed's constant LR (default: %(default)s)")
    t.add_argument("--precision", default="bf16", choices=PRECISIONS)
    t.add_argument("--n", type=int, default=2000, help="valid faces to score each version on (default: %(default)s)")
    t.add_argument("--work", type=Path, default=Path("/tmp/facegen-gpu"), help="scratch folder (default: %(default)s)")
    t.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="passed on to every trainer run")
    u = sub.add_parser("unpack", help="join, decompress and extract what train packed")
    u.add_argument("folder", type=Path, help="the folder holding NAME.partNN (every bundle in it is unpacked)")
    u.add_argument("--to", type=Path, required=True)
    args = p.parse_args(argv)
    if args.command == "unpack":
        unpack(args.folder, args.to)
        print(f"unpacked into {args.to}")
        return 0
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
