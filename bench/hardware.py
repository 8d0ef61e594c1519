"""The machine a benchmark ran on, printed at the top of every benchmark: a speed figure means
little without the CPU (or GPU) model and whether it has bf16 units."""

import os
import platform

import torch

from models_core.precision import CPU_BF16_FLAGS, choose_precision, cpu_flags


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> str:
    flags = cpu_flags()
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", *CPU_BF16_FLAGS, "amx_tile") if f in flags]
    lines = [
        f"CPU      {cpu_model()}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads",
        f"flags    {' '.join(simd) or '(none of avx2/avx512/amx)'}; native bf16: "
        f"{'yes' if any(f in flags for f in CPU_BF16_FLAGS) else 'no'}",
    ]
    if device.type == "cuda":
        lines.append(f"GPU      {torch.cuda.get_device_name(device)}")
    chosen = choose_precision("auto", device)
    lines.append(f"auto     {chosen.name} on {device} ({chosen.reason}); torch {torch.__version__}")
    return "\n".join(lines)
