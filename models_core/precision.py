"""Which precision to compute in: bf16 where the chip has native bf16 units, fp32 elsewhere.

On a CPU without bf16 instructions, bf16 autocast is emulated and runs many times slower than
fp32; on one with them (AVX512-BF16, AMX) it is faster for our networks (README, Benchmarks). So "auto" asks
the hardware, and says why it chose what it chose.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

PrecisionChoice = Literal["auto", "fp32", "bf16"]
PRECISIONS = get_args(PrecisionChoice)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bf16 matrix/vector units


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" or "bf16"
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    def autocast(self, device: torch.device):
        """A zero-argument factory of the context that runs code in this precision on `device`."""
        if self.name == "bf16":
            return lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext

    def to_dict(self) -> dict:
        return {"precision": self.name, "reason": self.reason}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux x86); empty where they cannot be read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cuda_bf16_supported(device: torch.device) -> bool:
    # including_emulation=False: emulated bf16 on an old GPU is slower than fp32.
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def choose_precision(requested: str, device: torch.device | str, *, flags: set[str] | None = None,
                     cuda_bf16: bool | None = None) -> Precision:
    """Resolve "auto" | "fp32" | "bf16" for `device`. `flags` (CPU) and `cuda_bf16` (GPU) are the
    hardware probe's answers; left out, the hardware is asked."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device = torch.device(device)
    if device.type == "cuda":
        native = cuda_bf16_supported(device) if cuda_bf16 is None else cuda_bf16
        what = torch.cuda.get_device_name(device) if cuda_bf16 is None else "this GPU"
        if requested == "fp32":
            return Precision("fp32", "asked for")
        if native:
            return Precision("bf16", "asked for" if requested == "bf16" else f"{what} supports bf16")
        return Precision("fp32", f"{what} has no native bf16" + (" (bf16 was asked for)" if requested == "bf16" else ""))
    if device.type != "cpu":
        return Precision(requested if requested != "auto" else "fp32",
                         "asked for" if requested != "auto" else f"no bf16 probe for {device.type}")
    if requested != "auto":
        return Precision(requested, "asked for")
    flags = cpu_flags() if flags is None else flags
    native = [f for f in CPU_BF16_FLAGS if f in flags]
    if native:
        return Precision("bf16", f"CPU has {native[0]}")
    return Precision("fp32", "CPU has no native bf16 (no " + " or ".join(CPU_BF16_FLAGS) + ")")
