"""torchrun / DistributedDataParallel plumbing.

Gradients are all-reduced by hand after each backward (as StyleGAN2-ADA and EDM do for their
GAN phases) rather than through the DDP wrapper: the discriminator runs several forwards per
backward, and the generator step must not sync D's gradients at all.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world=world)


def shutdown(ranks: Dist) -> None:
    if ranks.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, ranks: Dist) -> None:
    """Make every rank start from rank 0's weights and buffers."""
    if ranks.enabled:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def all_reduce_gradients(module: nn.Module, ranks: Dist) -> None:
    """Average the gradients of `module` over ranks in one flat all-reduce."""
    if not ranks.enabled:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= ranks.world
    for g, synced in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(synced.view_as(g))


def max_over_ranks(value: int, ranks: Dist, device: torch.device) -> int:
    """The largest of every rank's `value`, on every rank."""
    if not ranks.enabled:
        return value
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_tensor(t: torch.Tensor, ranks: Dist, device: torch.device) -> list[torch.Tensor]:
    """[rank 0's t, rank 1's t, ...] on every rank, on the CPU (t has the same shape on every rank)."""
    if not ranks.enabled:
        return [t.cpu()]
    t = t.to(device)  # NCCL gathers only device tensors
    out = [torch.empty_like(t) for _ in range(ranks.world)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]
