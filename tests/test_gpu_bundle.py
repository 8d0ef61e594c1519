"""scripts/gpu_bundle.py: what comes back from a lent GPU unpacks to the same bytes, and the best
version is picked by the valid-split score."""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

spec = importlib.util.spec_from_file_location("gpu_bundle", Path(__file__).parents[1] / "scripts" / "gpu_bundle.py")
gpu_bundle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_bundle)


def test_packed_parts_unpack_to_the_same_bytes_and_bf16_weights_shrink(tmp_path, monkeypatch):
    version = tmp_path / "ck" / "vae" / "000003"
    version.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    save_file({"w": (0.02 * torch.randn(300_000, generator=g)).bfloat16()}, version / "weights.safetensors")
    (version / "manifest.json").write_text('{"version": 3}')
    log = tmp_path / "vae.log"
    log.write_text("odd length\n")
    monkeypatch.setattr(gpu_bundle, "PART_BYTES", 100_000)

    parts = gpu_bundle.pack({"ck_vae/vae/000003": version, "logs/vae.log": log}, tmp_path / "out")
    assert len(parts) > 1 and all(p.stat().st_size <= 100_000 for p in parts)
    assert sum(p.stat().st_size for p in parts) < 0.85 * (version / "weights.safetensors").stat().st_size
    gpu_bundle.unpack(tmp_path / "out", tmp_path / "home")
    for original, back in [(version / "weights.safetensors", "ck_vae/vae/000003/weights.safetensors"),
                           (version / "manifest.json", "ck_vae/vae/000003/manifest.json"), (log, "logs/vae.log")]:
        assert (tmp_path / "home" / back).read_bytes() == original.read_bytes()


def test_the_best_version_is_the_highest_psnr_or_the_lowest_swd():
    assert gpu_bundle.best_version("vae", {1: {"recon_psnr_db": 21.6}, 2: {"recon_psnr_db": 22.3}, 3: {"recon_psnr_db": 22.2}}) == 2
    assert gpu_bundle.best_version("gan", {1: {"swd_x1e3_avg": 9.1}, 2: {"swd_x1e3_avg": 8.7}, 3: {"swd_x1e3_avg": 10.9}}) == 2


def test_scoring_goes_newest_first_until_the_deadline_and_always_scores_the_newest():
    now = [0.0]

    def score(v):
        now[0] += 10  # each evaluation takes 10 s
        return {"recon_psnr_db": float(v)}

    assert list(gpu_bundle.score_newest_first([1, 2, 3, 4], score, deadline=25, clock=lambda: now[0])) == [4, 3, 2]
    now[0] = 100.0
    assert list(gpu_bundle.score_newest_first([1, 2, 3], score, deadline=25, clock=lambda: now[0])) == [3]


def test_a_run_still_going_at_the_deadline_is_stopped_and_a_crashed_one_reported():
    trainer_like = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); time.sleep(60)"
    sleeper = subprocess.Popen([sys.executable, "-c", trainer_like])  # SIGTERM: state saved, exit 128 + 15
    crashed = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
    runs = {"gan": ("gan", sleeper), "vae": ("vae", crashed), "ae": ("ae", stubborn)}
    failed = gpu_bundle.finish_runs(runs, deadline=time.monotonic() + 1, grace=1)
    assert sleeper.returncode == 143 and stubborn.returncode == -9  # the one that ignored SIGTERM was killed
    assert failed == ["vae", "ae"]
