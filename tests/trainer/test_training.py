import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from models_core.checkpoint import WEIGHTS_FILE, CheckpointStore
from models_core.images import image_grid
from models_core.precision import choose_precision
from service.local_server import wait_until
from tests.trainer.conftest import REPO, run_trainer
from trainer.config import TrainConfig
from trainer.data import PackedFaces
from trainer.distributed import Dist
from trainer.log import RunLog
from trainer.loop import Trainer, sudden_jumps, train as train_run
from trainer.schedule import EndPlanner, lr_at, planned_warmdown, warmup_factor
from trainer.state import STATE_FILE, load_training_state, save_training_state
from trainer.tasks import load_optimizer_state

TINY = ["--preset", "tiny", "--no-progress", "--pca-samples", "32"]


def train(tmp_path, model, *args, **kwargs):
    return run_trainer("--model", model, "--runs-dir", tmp_path / "runs", "--checkpoints", tmp_path / "ckpt", *TINY, *args,
                       cwd=tmp_path, **kwargs)


def run_dir(tmp_path, name):
    return next(p for p in (tmp_path / "runs").iterdir() if p.name.endswith(f"-{name}"))


def test_vae_run_publishes_a_version_the_store_loads(tmp_path, packed):
    proc = train(tmp_path, "vae", "--data", packed, "--epochs", "2", "--batch-size", "16", "--log-every", "2")
    assert proc.returncode == 0, proc.stderr
    store = CheckpointStore(tmp_path / "ckpt")
    ckpt = store.load("vae")
    m = ckpt.manifest
    assert (m.kind, m.version, m.step, m.epoch) == ("vae", 1, 8, 2)  # 64 train faces / 16 = 4 steps per epoch
    assert m.data_fingerprint == PackedFaces.open(packed).fingerprint
    assert set(m.metrics) == {"loss", "recon", "kl"}
    assert ckpt.pca is not None and ckpt.pca.components.shape == (8, 8)  # from the 16 valid faces

    run = run_dir(tmp_path, "vae")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [2, 4, 6, 8]
    assert {"loss", "recon", "kl", "img_per_s", "lr", "epoch"} <= set(lines[0])
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step00000004.png", "step00000004_reconstructions.png", "step00000008.png", "step00000008_reconstructions.png"]
    config = json.loads((run / "config.json").read_text())
    assert config["network"]["latent_dim"] == 8
    expected = choose_precision("auto", "cpu")  # what this machine's CPU has decides
    assert config["precision"] == "auto" and config["resolved_precision"] == expected.to_dict()
    assert f"in {expected.name} ({expected.reason})" in proc.stdout + proc.stderr
    # The last epoch's sample grid is what the service serves for seed 0 (the fitted Gaussian).
    # (Equal up to float rounding: the trainer's process may run with another thread count.)
    served = image_grid(ckpt.model.decode(ckpt.sample_latents(64, torch.Generator().manual_seed(0))), nrow=8)
    written = np.asarray(Image.open(run / "samples" / "step00000008.png"), dtype=np.int16)
    assert np.abs(written - served.astype(np.int16)).max() <= 2


def test_gan_publishes_the_ema_generator_and_a_ganspace_basis(tmp_path, packed):
    proc = train(tmp_path, "gan", "--data", packed, "--epochs", "1", "--publish-dtype", "bfloat16")
    assert proc.returncode == 0, proc.stderr
    ckpt = CheckpointStore(tmp_path / "ckpt").load("gan")
    assert ckpt.manifest.step == 2 and ckpt.manifest.weights_dtype == "bfloat16"  # 64 faces / batch 32
    state = load_training_state(run_dir(tmp_path, "gan") / STATE_FILE)
    published = load_file(ckpt.path / WEIGHTS_FILE)
    ema, raw = state["ema"]["net"], state["modules"]["G"]
    key = "project.0.weight"
    torch.testing.assert_close(published[key].float(), ema[key].bfloat16().float())
    assert not torch.allclose(ema[key], raw[key])
    assert "D" in state["modules"] and not any(k.startswith("classifier") for k in published)
    basis = ckpt.pca
    assert basis.n_components == 8 and torch.allclose(basis.components.norm(dim=1), torch.ones(8), atol=1e-5)
    # the discriminator travels beside G, in the published dtype, for projecting real faces
    d_key = "classifier.weight"
    assert ckpt.extras["discriminator." + d_key].dtype == torch.bfloat16
    torch.testing.assert_close(ckpt.discriminator.state_dict()[d_key], state["modules"]["D"][d_key].bfloat16().float())


def test_a_run_can_start_from_a_published_versions_weights(tmp_path, packed):
    assert train(tmp_path, "gan", "--data", packed, "--epochs", "1").returncode == 0
    store = CheckpointStore(tmp_path / "ckpt")
    source = store.load("gan")
    cfg = TrainConfig(model="gan", data=packed, preset="tiny", init_from=source.path, runs_dir=tmp_path / "runs",
                      checkpoints=tmp_path / "ckpt", progress=False)
    started = Trainer(cfg, Dist())
    started.open_run(None)  # a new run: the version's weights go in here
    started.log.close()
    for net, weights in ((started.task.G, source.model), (started.ema.net, source.model), (started.task.D, source.discriminator)):
        for (k, x), y in zip(net.state_dict().items(), weights.state_dict().values()):
            assert torch.equal(x, y), k

    proc = train(tmp_path, "gan", "--data", packed, "--epochs", "1", "--init-from", source.path)
    assert proc.returncode == 0, proc.stderr
    assert "starting from gan v1" in proc.stdout and "its generator and discriminator" in proc.stdout
    tuned = store.load("gan", 2)
    assert tuned.manifest.step == 2 and tuned.manifest.provenance["init_from"] == str(source.path.resolve())
    source.path.rename(tmp_path / "gone")  # a resumed run has the weights in its state, not in that folder
    proc = train(tmp_path, "gan", "--resume", "--epochs", "2")
    assert proc.returncode == 0 and "resuming from step 2" in proc.stdout and "starting from" not in proc.stdout, proc.stderr
    (tmp_path / "gone").rename(source.path)

    proc = train(tmp_path, "vae", "--data", packed, "--init-from", source.path)
    assert proc.returncode == 1 and "is a gan version; this run trains --model vae" in proc.stderr
    proc = train(tmp_path, "gan", "--data", packed, "--init-from", source.path, "--preset", "small")
    assert proc.returncode == 1 and "its network is not --preset small's" in proc.stderr
    proc = train(tmp_path, "gan", "--data", packed, "--init-from", tmp_path)
    assert proc.returncode == 1 and "is not a published version" in proc.stderr and "Traceback" not in proc.stderr


def test_compiling_the_gan_in_bf16_on_the_cpu_is_refused_before_any_work(tmp_path, packed):
    """torch.compile's bf16 CPU code gives the generator NaN gradients at the first step."""
    proc = train(tmp_path, "gan", "--data", packed, "--compile", "--precision", "bf16", "--device", "cpu")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--compile with bf16 on the CPU" in proc.stderr and "--precision fp32" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, packed):
    common = ["--data", packed, "--epochs", "3", "--batch-size", "16", "--ckpt-every", "3"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert train(a, "ae", *common).returncode == 0
    first = train(b, "ae", *common, "--max-steps", "5")
    assert first.returncode == 0, first.stderr
    assert load_training_state(run_dir(b, "ae") / STATE_FILE)["step"] == 5
    second = train(b, "ae", "--resume", "--max-steps", "12")
    assert second.returncode == 0, second.stderr
    assert "resuming from step 5 of 12 (epoch 1)" in second.stdout
    full, resumed = CheckpointStore(a / "ckpt").load("ae"), CheckpointStore(b / "ckpt").load("ae", 2)
    assert resumed.manifest.step == full.manifest.step == 12
    for (k, x), y in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(x, y), k


def test_resume_refuses_changed_hyperparameters_and_missing_runs(tmp_path, packed):
    proc = train(tmp_path, "ae", "--resume")
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr
    assert train(tmp_path, "ae", "--data", packed, "--max-steps", "1").returncode == 0
    proc = train(tmp_path, "ae", "--resume", "--lr", "0.1")
    assert proc.returncode == 2 and "cannot change --lr when resuming" in proc.stderr
    # A run folder says what it trains: --model may be left out, but not contradicted.
    run = run_dir(tmp_path, "ae")
    proc = run_trainer("--resume", run, "--runs-dir", tmp_path / "runs", "--max-steps", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_trainer("--model", "vae", "--resume", run, cwd=tmp_path)
    assert proc.returncode == 2 and "trained --model ae, not vae" in proc.stderr
    proc = run_trainer("--resume", cwd=tmp_path)
    assert proc.returncode == 2 and "--model is required" in proc.stderr


def start_long_run(tmp_path, packed, *extra, model="ae"):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "trainer", "--model", model, "--data", str(packed), "--epochs", "1000", "--batch-size", "16",
           "--runs-dir", str(tmp_path / "runs"), "--checkpoints", str(tmp_path / "ckpt"), *TINY, *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def saved_step(tmp_path, model="ae"):
    try:
        return load_training_state(run_dir(tmp_path, model) / STATE_FILE)["step"]
    except (StopIteration, FileNotFoundError, OSError, KeyError):
        return 0


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_an_interrupted_gan_run_resumes_to_the_same_bytes(tmp_path, packed, how):
    """Two optimizers, an EMA, the global RNG for z: interrupted and resumed, the published
    generator is byte-identical to an uninterrupted run's."""
    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    interrupted.mkdir(), straight.mkdir()
    proc = start_long_run(interrupted, packed, "--ckpt-every", "6", model="gan")
    assert wait_until(lambda: saved_step(interrupted, "gan") >= 6, timeout=120, interval=0.05)
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    else:
        proc.kill()
        proc.wait(timeout=60)
    stopped_at = saved_step(interrupted, "gan")
    target = stopped_at + 7  # crosses an epoch end (4 steps per epoch) and a snapshot
    resumed = train(interrupted, "gan", "--resume", "--max-steps", str(target))
    assert resumed.returncode == 0, resumed.stderr
    reference = train(straight, "gan", "--data", packed, "--epochs", "1000", "--batch-size", "16",
                      "--ckpt-every", "6", "--max-steps", str(target))
    assert reference.returncode == 0, reference.stderr
    a, b = CheckpointStore(straight / "ckpt"), CheckpointStore(interrupted / "ckpt")
    assert a.load("gan").manifest.step == b.load("gan").manifest.step == target
    assert (a.path("gan", 1) / WEIGHTS_FILE).read_bytes() == (b.path("gan", b.latest("gan")) / WEIGHTS_FILE).read_bytes()


def test_sigterm_snapshots_and_exits_cleanly(tmp_path, packed):
    proc = start_long_run(tmp_path, packed, "--ckpt-every", "1000")
    assert wait_until(lambda: (tmp_path / "runs").exists() and any((p / "metrics.jsonl").exists() for p in (tmp_path / "runs").iterdir()),
                      timeout=120, interval=0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by signal 15" in stdout and "Traceback" not in stderr
    assert saved_step(tmp_path) > 0


def test_sigkill_loses_at_most_one_interval_and_resumes(tmp_path, packed):
    proc = start_long_run(tmp_path, packed, "--ckpt-every", "4")
    assert wait_until(lambda: saved_step(tmp_path) >= 8, timeout=120, interval=0.2)
    proc.kill()
    proc.wait(timeout=30)
    step = saved_step(tmp_path)
    assert step % 4 == 0 and step >= 8
    resumed = train(tmp_path, "ae", "--resume", "--max-steps", str(step + 3))
    assert resumed.returncode == 0, resumed.stderr
    assert CheckpointStore(tmp_path / "ckpt").load("ae").manifest.step == step + 3


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_state(tmp_path, packed):
    proc = train(tmp_path, "ae", "--data", packed, "--epochs", "50", "--batch-size", "16", "--lr", "1e30",
                 "--ckpt-every", "1", "--log-every", "1")
    assert proc.returncode == 1
    assert "became non-finite" in proc.stderr and "Traceback" not in proc.stderr
    state = load_training_state(run_dir(tmp_path, "ae") / STATE_FILE)
    assert all(torch.isfinite(v).all() for v in state["modules"]["net"].values() if v.is_floating_point())
    assert CheckpointStore(tmp_path / "ckpt").versions("ae") == []


def test_time_limit_publishes_what_it_has_and_resume_goes_on_without_it(tmp_path, packed):
    proc = train(tmp_path, "ae", "--data", packed, "--epochs", "100000", "--batch-size", "16", "--time-limit", "0.02")
    assert proc.returncode == 0, proc.stderr
    assert "--time-limit of 0.02 min reached" in proc.stdout
    run = run_dir(tmp_path, "ae")
    state = load_training_state(run / STATE_FILE)
    store = CheckpointStore(tmp_path / "ckpt")
    assert store.versions("ae") == [1] and store.load("ae").manifest.step == state["step"] > 0
    # The budget was for that invocation: a resume without one runs to its own end.
    resumed = train(tmp_path, "ae", "--resume", "--max-steps", str(state["step"] + 3))
    assert resumed.returncode == 0, resumed.stderr
    assert store.load("ae").manifest.step == state["step"] + 3
    assert json.loads((run / "config.json").read_text())["time_limit"] is None


def test_at_the_time_limit_the_state_is_saved_before_the_publish(tmp_path, packed, monkeypatch):
    def lease_ends(*args, **kwargs):
        raise KeyboardInterrupt  # as if the machine went away while the version was being written

    monkeypatch.setattr(CheckpointStore, "publish", lease_ends)
    cfg = TrainConfig(model="ae", data=packed, preset="tiny", batch_size=16, epochs=100000, time_limit=0.01,
                      ckpt_every=10**9, pca_samples=16, runs_dir=tmp_path / "runs", checkpoints=tmp_path / "ckpt", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg)
    assert load_training_state(run_dir(tmp_path, "ae") / STATE_FILE)["step"] > 0


def test_a_warmdown_added_on_resume_ends_the_run_with_a_linear_fall_of_the_lr(tmp_path, packed):
    assert train(tmp_path, "ae", "--data", packed, "--epochs", "2", "--batch-size", "16", "--log-every", "1",
                 "--max-steps", "3").returncode == 0
    resumed = train(tmp_path, "ae", "--resume", "--max-steps", "100", "--lr-warmdown", "1")  # 4 steps per epoch: the last 4 of 8
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in (run_dir(tmp_path, "ae") / "metrics.jsonl").read_text().splitlines()]
    assert [(l["step"], l["lr"]) for l in lines] == [(1, 5e-4), (2, 5e-4), (3, 5e-4), (4, 5e-4), (5, 5e-4),
                                                    (6, 3.75e-4), (7, 2.5e-4), (8, 1.25e-4)]
    assert lr_at(0, 100, 1e-3, 0) == lr_at(99, 100, 1e-3, 0) == 1e-3  # no warm-down: the seed's constant LR


def test_under_a_time_limit_the_warmdown_ends_when_the_time_runs_out():
    plan = EndPlanner(started=0.0, deadline=100.0)
    # The first step took 3 s (CUDA start-up): no plan from that, or the warm-down would start at once.
    assert plan.end(10_000, step=1, now=3.0) == 10_000
    assert plan.end(10_000, step=30, now=10.0) == 10_000  # a tenth of the way in: the speed is measured from here
    assert plan.end(10_000, step=130, now=20.0) == 130 + 10 * 80  # 10 steps/s, 80 s left
    assert lr_at(850, plan.end(10_000, step=850, now=92.0), 1e-3, 200) == 0.4e-3  # 80 steps left of a 200-step warm-down
    assert plan.end(1000, step=930, now=100.0) == 930  # at the deadline
    assert plan.end(500, step=130, now=20.0) == 500  # the epochs end first
    assert lr_at(130, 120, 1e-3, 20) == 0.0  # never negative


def test_a_time_limited_run_warms_down_to_its_last_step(tmp_path, packed):
    # Far more epochs, and a longer warm-down, than 3 s allow: the LR falls anyway, from where the
    # plan starts, and never climbs back.
    assert train(tmp_path, "ae", "--data", packed, "--epochs", "100000", "--batch-size", "16", "--log-every", "1",
                 "--time-limit", "0.05", "--lr-warmdown", "1000").returncode == 0
    lrs = [json.loads(line)["lr"] for line in (run_dir(tmp_path, "ae") / "metrics.jsonl").read_text().splitlines()]
    # How far it falls depends on how well this machine's speed was predicted; that it falls, and only falls, not.
    assert lrs[0] == 5e-4 and lrs[-1] < 5e-4
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))


def test_a_warmdown_longer_than_the_time_plan_falls_from_where_the_plan_starts():
    # 1000 warm-down steps asked for, but the plan made at step 300 ends the run at step 500: the LR
    # is still whole at 300 and falls linearly to 0 at 500, with no cliff where the plan starts.
    steps = planned_warmdown(1000, end=500, plan_start=300)
    assert [lr_at(s, 500, 1e-3, steps) for s in (300, 400, 500)] == [1e-3, 0.5e-3, 0.0]
    assert planned_warmdown(1000, end=500, plan_start=None) == 1000  # no time plan: the warm-down asked for


def test_the_warmup_rises_linearly_then_holds():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_a_loss_that_jumps_a_hundredfold_is_flagged():
    # The window means of a real seed-VAE run around its divergence (GPU, no gradient clipping).
    before, after = {"loss": 3.1e3, "recon": 2.0e3, "kl": 1.1e3}, {"loss": 4.2e9, "recon": 2.4e3, "kl": 1.4e11}
    assert sudden_jumps(before, after) == ["loss", "kl"]
    assert sudden_jumps(before, {k: 50 * v for k, v in before.items()}) == []
    assert sudden_jumps({}, after) == [] and sudden_jumps({"kl": 0.0}, {"kl": 5.0}) == []
    assert sudden_jumps({"D_G_z": 0.001, "loss_G": 3.0}, {"D_G_z": 0.4, "loss_G": 9.0}) == []  # probabilities never alarm


def test_bad_command_lines_are_explained(tmp_path, packed):
    proc = train(tmp_path, "vae")
    assert proc.returncode == 2 and "--data is required" in proc.stderr
    proc = train(tmp_path, "vae", "--data", tmp_path)
    assert proc.returncode == 1 and "is not a prepared dataset" in proc.stderr and "Traceback" not in proc.stderr
    proc = train(tmp_path, "vae", "--data", packed, "--device", "cuda:0")
    if not torch.cuda.is_available():
        assert proc.returncode == 1 and "no usable CUDA device" in proc.stderr
    proc = train(tmp_path, "vae", "--data", packed, "--augment")
    assert proc.returncode == 2 and "--augment is for --model gan" in proc.stderr
    proc = run_trainer("--help", cwd=REPO)
    assert proc.returncode == 0
    for option in ("--beta-kl", "--ema", "--resume", "--init-from", "--time-limit", "--ckpt-every", "--publish-every", "prepare-data", "torchrun"):
        assert option in proc.stdout


def test_torchrun_two_cpu_processes_publish_one_version(tmp_path, packed):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "trainer",
           "--model", "gan", "--data", str(packed), "--epochs", "2", "--batch-size", "8",
           "--runs-dir", str(tmp_path / "runs"), "--checkpoints", str(tmp_path / "ckpt"), *TINY]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = CheckpointStore(tmp_path / "ckpt")
    assert store.versions("gan") == [1]
    assert store.load("gan").manifest.step == 8  # 64 faces / (8 per rank × 2 ranks) = 4 steps per epoch
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_a_restored_fused_adam_pairs_each_weight_with_its_own_moments(tmp_path):
    def run(steps, restore_at=None, fused_before=True):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(8, 6, 4, 4).contiguous(memory_format=torch.channels_last))
        opt = torch.optim.Adam([w], 1e-2, fused=fused_before if restore_at else True)
        for i in range(steps):
            w.grad = torch.randn(8, 6, 4, 4).contiguous(memory_format=torch.channels_last)
            opt.step()
            if i == restore_at:  # through disk, as --resume does: every tensor comes back contiguous
                save_training_state(tmp_path / "s.safetensors", {"opt": opt.state_dict()})
                opt = torch.optim.Adam([w], 1e-2, fused=True)
                load_optimizer_state(opt, load_training_state(tmp_path / "s.safetensors")["opt"])
                assert opt.param_groups[0]["fused"]
        return w.detach()

    assert torch.equal(run(4), run(4, restore_at=1))
    assert torch.allclose(run(4), run(4, restore_at=1, fused_before=None), atol=1e-6)  # saved by the per-tensor loop


def test_resuming_a_finished_run_publishes_nothing(tmp_path, packed):
    assert train(tmp_path, "ae", "--data", packed, "--epochs", "1", "--batch-size", "16").returncode == 0
    again = train(tmp_path, "ae", "--resume")
    assert again.returncode == 0, again.stderr
    assert "already complete: step 4 of 4, published as ae v1; nothing to do" in again.stdout
    assert CheckpointStore(tmp_path / "ckpt").versions("ae") == [1]
    more = train(tmp_path, "ae", "--resume", "--epochs", "2")  # more epochs: it trains on
    assert more.returncode == 0 and "resuming from step 4 of 8 (epoch 1)" in more.stdout, more.stderr
    assert CheckpointStore(tmp_path / "ckpt").versions("ae") == [1, 2]


def test_a_quiet_console_still_tells_the_story_and_names_the_units(tmp_path, packed):
    proc = train(tmp_path, "vae", "--data", packed, "--epochs", "1", "--batch-size", "16", "--log-every", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "4 steps" in out and "kl = nats per image" in out and "recon = per-pixel MSE" in out
    summary = next(line for line in out.splitlines() if line.startswith("step 2/4 (epoch 0) "))
    assert "loss=" in summary and "kl=" in summary and "img/s" in summary and "to go" in summary


def test_train_is_also_a_subcommand_and_training_never_publishes_into_the_served_store(tmp_path, packed):
    proc = run_trainer("train", "--model", "ae", "--data", packed, "--max-steps", "2", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "checkpoints").exists()  # the store the service reads by default
    store = CheckpointStore(tmp_path / "runs" / "checkpoints")
    provenance = store.read_manifest("ae").provenance
    assert provenance["run"] == str(run_dir(tmp_path, "ae").resolve())

    proc = run_trainer("evaluate", "--model", "ae", "--data", packed, "--n", "16", "--no-fid", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # the trainer's store by default, too
    assert not (tmp_path / "checkpoints").exists() and "eval_split" in store.read_manifest("ae").metrics
    proc = run_trainer("promote", "--model", "ae", cwd=tmp_path)  # from the trainer's store into the served one
    assert proc.returncode == 0 and "promoted ae v1 from" in proc.stdout, proc.stderr
    assert CheckpointStore(tmp_path / "checkpoints").versions("ae") == [1]


def test_divergence_advice_matches_the_run():
    from types import SimpleNamespace

    from trainer.loop import Trainer

    advice = lambda clip: Trainer.divergence_advice(SimpleNamespace(cfg=SimpleNamespace(lr=5e-4, grad_clip=clip)))  # noqa: E731
    assert advice(0.0) == "try a lower --lr (now 0.0005), or --grad-clip 1.0"
    assert advice(1.0) == "try a lower --lr (now 0.0005); gradients are already clipped at 1"


def test_the_seed_vae_starts_without_a_kl_spike(tmp_path, packed):
    # From PyTorch's default init and the seed's Adam 5e-4, three steps took the KL to ~1e11 nats:
    # a log-variance head with 16,384 inputs, each weight moved ~lr the same way by Adam.
    proc = run_trainer("--model", "vae", "--data", packed, "--max-steps", "6", "--batch-size", "16", "--log-every", "1",
                       "--no-progress", "--pca-samples", "16", "--runs-dir", tmp_path / "runs", "--checkpoints",
                       tmp_path / "ckpt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    kl = [json.loads(line)["kl"] for line in (run_dir(tmp_path, "vae") / "metrics.jsonl").read_text().splitlines()]
    assert len(kl) == 6 and max(kl) < 1e3, kl
    assert "may be diverging" not in proc.stdout


def test_a_runs_sample_grid_is_what_the_service_serves_for_the_published_version(tmp_path, packed):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.conftest import make_settings

    # fp32 as make_settings serves (the trainer's "auto" is bf16 on a chip with AMX or AVX512-BF16)
    assert train(tmp_path, "vae", "--data", packed, "--epochs", "1", "--batch-size", "16", "--precision", "fp32").returncode == 0
    grid = run_dir(tmp_path, "vae") / "samples" / "step00000004.png"
    with TestClient(create_app(make_settings(CheckpointStore(tmp_path / "ckpt")))) as client:
        served = client.get("/sample?model=vae&n=64&nrow=8&seed=0").content
    assert np.array_equal(np.asarray(Image.open(grid)), np.asarray(Image.open(io.BytesIO(served)).convert("RGB")))


def test_the_time_to_go_is_the_time_limits_when_that_comes_first(tmp_path, monkeypatch):
    log = RunLog(tmp_path, total_steps=1000, start_step=0, enabled=True, progress=False)
    monkeypatch.setattr("trainer.log.time.monotonic", lambda: 110.0)
    log.started = 100.0  # 10 steps in 10 s: 990 s of steps left
    log.deadline = 400.0
    assert log.summary(10, 0, {}).endswith(", 4m50s to go (time limit)")
    log.deadline = 2000.0
    assert log.summary(10, 0, {}).endswith(", 16m30s to go")
    log.close()
