"""Data-parallel training really averages gradients: two gloo processes, checked rank by rank."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from service.local_server import free_port
from trainer import distributed
from trainer.config import TrainConfig
from trainer.data import FaceBatches, PackedFaces
from trainer.distributed import Dist
from trainer.tasks import make_task

STEPS = 3


def worker(rank: int, world: int, port: int, packed: str, out: str, model: str, all_reduce: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        if not all_reduce:
            distributed.all_reduce_gradients = lambda module, ranks: None
            import trainer.tasks
            trainer.tasks.all_reduce_gradients = distributed.all_reduce_gradients
        ranks = Dist(rank=rank, local_rank=0, world=world)
        torch.manual_seed(rank)  # different init per rank: the broadcast must make them equal
        cfg = TrainConfig(model=model, data=packed, preset="tiny", batch_size=8, precision="fp32")
        task = make_task(cfg, torch.device("cpu"), ranks=ranks)
        torch.manual_seed(100 + rank)  # different noise per rank, as the trainer seeds it
        batches = FaceBatches(PackedFaces.open(packed).tensor("train", "cpu"), 8, seed=0, flip=False, rank=rank, world=world)
        seen = []
        for step, x in zip(range(STEPS), batches.epoch(0)):
            seen.append(x.sum().item())
            task.train_step(x)
        torch.save({
            "modules": {k: m.state_dict() for k, m in task.modules().items()},
            "optimizers": {k: o.state_dict()["state"] for k, o in task.optimizers().items()},
            "seen": seen,
        }, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path, packed, model: str, all_reduce: bool) -> list[dict]:
    mp.spawn(worker, args=(2, free_port(), str(packed), str(tmp_path), model, all_reduce), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


def differences(a: dict, b: dict) -> list[str]:
    """Names of the tensors (weights, buffers, optimizer moments) that differ between two ranks."""
    out = []
    for key in a["modules"]:
        out += [f"{key}.{n}" for n, t in a["modules"][key].items() if not torch.equal(t, b["modules"][key][n])
                and "running" not in n and "num_batches" not in n]  # BatchNorm statistics are per rank
    for key in a["optimizers"]:
        for i, state in a["optimizers"][key].items():
            out += [f"{key}[{i}].{n}" for n, t in state.items() if not torch.equal(t, b["optimizers"][key][i][n])]
    return out


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_ranks_see_different_data_and_end_with_identical_weights_and_optimizer_states(tmp_path, packed, model):
    a, b = run_ranks(tmp_path, packed, model, all_reduce=True)
    assert all(x != y for x, y in zip(a["seen"], b["seen"])), "both ranks trained on the same batches"
    assert differences(a, b) == []


def test_the_same_check_fails_when_gradients_are_not_averaged(tmp_path, packed):
    a, b = run_ranks(tmp_path, packed, "vae", all_reduce=False)
    assert differences(a, b), "the ranks agree even without the all-reduce: the check above proves nothing"
