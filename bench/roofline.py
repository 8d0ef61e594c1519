"""How close the training steps and batched decodes come to this machine's own dense peak.

    python bench/roofline.py [--device cpu|cuda] [--preset seed] [--precision auto|fp32|bf16]

1. The peak: the best GFLOP/s of a large square GEMM (torch.mm), in fp32 and in bf16.
2. The work: FLOPs of one training step per model and of one batched decode, counted by
   torch.utils.flop_counter (matmuls and convolutions, forward and backward; elementwise ops
   are not counted, so a step's fraction of peak is, if anything, understated).
3. Achieved GFLOP/s = counted FLOPs / measured time, as a fraction of the GEMM peak in the
   precision the step runs in (the trainer's and the service's "auto" unless --precision).
"""

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from hardware import describe
from models_core import small_map_conv
from models_core.folding import serving_copy
from models_core.precision import PRECISIONS, choose_precision
from models_core.kinds import build_model, get_kind
from trainer.config import TrainConfig
from trainer.tasks import make_task


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Fastest of `repeats` timed calls: the machine is shared, the minimum is its capability."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_peak(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b), device, repeats) / 1e9


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def train_step_case(model: str, preset: str, precision, device: torch.device, before: bool = False):
    """The trainer's step; with `before`, as it ran before small_map_conv and the fused Adam, for a
    ratio in the same run."""
    cfg = TrainConfig(model=model, data=".", preset=preset)
    torch.manual_seed(0)
    task = make_task(cfg, device, precision.autocast(device))
    x = (torch.rand(cfg.batch_size, 3, 64, 64, device=device) * 2 - 1).contiguous(memory_format=torch.channels_last)
    if not before:
        return f"{model} train step", cfg.batch_size, lambda: task.train_step(x)
    for opt in task.optimizers().values():
        opt.param_groups[0]["fused"] = False  # the per-tensor loop

    def step():
        small, small_map_conv.SMALL_MAP_POSITIONS = small_map_conv.SMALL_MAP_POSITIONS, 0
        try:
            return task.train_step(x)
        finally:
            small_map_conv.SMALL_MAP_POSITIONS = small

    return f"{model} step before", cfg.batch_size, step


def decode_case(model: str, preset: str, precision, device: torch.device, batch: int, before: bool = False):
    """The service's decode, through the copy it serves; with `before`, the stored fp32 network
    under autocast, as it was served before models_core.folding.serving_copy."""
    torch.manual_seed(0)
    net = build_model(model, get_kind(model).presets[preset]).to(device).eval()
    if not before:
        net = serving_copy(net, precision.dtype)
    z = torch.randn(batch, net.latent_dim, device=device)
    autocast = precision.autocast(device)

    def decode():
        with torch.inference_mode(), autocast():
            return net.decode(z)

    return f"{model} decode" + (" before" if before else ""), batch, decode


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="seed", help="network size (default: the seed study's)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--gemm", type=int, default=None, help="GEMM side (default 2048 on CPU, 8192 on GPU)")
    p.add_argument("--decode-batch", type=int, nargs="+", default=[64], help="decode batch sizes (default 64)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", nargs="+", default=["ae", "vae", "gan"])
    p.add_argument("--before", action="store_true", help="also time each step as it ran before the GEMM weight "
                   "gradient for small maps (models_core/small_map_conv.py) and the fused Adam, and each decode "
                   "before the service decoded a folded copy in the computing dtype")
    args = p.parse_args()
    device = torch.device(args.device)
    precision = choose_precision(args.precision, device)
    n = args.gemm or (8192 if device.type == "cuda" else 2048)

    print(describe(device))

    def peaks() -> dict[str, float]:
        return {name: gemm_peak(n, dtype, device, args.repeats) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    cases = [train_step_case(m, args.preset, precision, device) for m in args.models]
    if args.before:
        cases += [train_step_case(m, args.preset, precision, device, before=True) for m in args.models]
    for m in args.models:
        for batch in args.decode_batch:
            cases.append(decode_case(m, args.preset, precision, device, batch))
            if args.before:
                cases.append(decode_case(m, args.preset, precision, device, batch, before=True))

    # The machine is shared: a burst of GEMMs can land in a slow stretch (bf16 213 against 409 GFLOP/s
    # a minute later), so the peak is measured before and after the work and the better one kept.
    first = peaks()
    rows = []
    for label, batch, fn in tqdm(cases, desc="timing", leave=False):
        rows.append((label, batch, count_flops(fn), best_seconds(fn, device, args.repeats)))
    last = peaks()
    best = {k: max(first[k], last[k]) for k in first}
    print(f"GEMM {n}×{n}: fp32 {best['fp32']:.0f} GFLOP/s, bf16 {best['bf16']:.0f} GFLOP/s "
          f"(before the work {first['fp32']:.0f} / {first['bf16']:.0f}, after {last['fp32']:.0f} / {last['bf16']:.0f})")
    peak = best[precision.name]
    print(f"running in {precision.name} ({precision.reason}); fractions are of the {precision.name} GEMM peak, {peak:.0f} GFLOP/s\n")
    print(f"{'work':17} {'batch':>5} {'GFLOP/img':>10} {'ms/step':>8} {'img/s':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for label, batch, flops, seconds in rows:
        achieved = flops / seconds / 1e9
        print(f"{label:17} {batch:5d} {flops / batch / 1e9:10.2f} {seconds * 1e3:8.1f} {batch / seconds:8.1f} "
              f"{achieved:8.0f} {achieved / peak:7.0%}")


if __name__ == "__main__":
    main()
