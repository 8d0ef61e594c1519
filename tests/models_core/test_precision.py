import pytest
import torch

from models_core.dcgan import Generator
from models_core.images import to_uint8
from models_core.precision import choose_precision, cpu_flags
from models_core.kinds import get_kind

ZEN4_FLAGS = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
SAPPHIRE_RAPIDS_FLAGS = {"avx2", "avx512f", "amx_tile", "amx_bf16"}
SKYLAKE_FLAGS = {"avx2", "avx512f", "avx512_vnni"}


@pytest.mark.parametrize("flags, expected", [
    (ZEN4_FLAGS, "bf16"), (SAPPHIRE_RAPIDS_FLAGS, "bf16"), (SKYLAKE_FLAGS, "fp32"), (set(), "fp32"),
])
def test_auto_on_cpu_follows_the_native_bf16_units(flags, expected):
    chosen = choose_precision("auto", "cpu", flags=flags)
    assert chosen.name == expected
    assert chosen.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    assert ("avx512_bf16" in chosen.reason or "amx_bf16" in chosen.reason)  # says which unit, or which it lacks


@pytest.mark.parametrize("requested", ["fp32", "bf16"])
def test_an_explicit_choice_overrides_the_cpu_probe(requested):
    for flags in (ZEN4_FLAGS, SKYLAKE_FLAGS):
        chosen = choose_precision(requested, "cpu", flags=flags)
        assert (chosen.name, chosen.reason) == (requested, "asked for")


@pytest.mark.parametrize("requested, native, expected", [
    ("auto", True, "bf16"), ("auto", False, "fp32"), ("fp32", True, "fp32"), ("bf16", True, "bf16"),
    ("bf16", False, "fp32"),  # pre-Ampere GPUs only emulate bf16; never slower than asked-for fp32
])
def test_cuda_uses_bf16_only_where_the_gpu_supports_it(requested, native, expected):
    assert choose_precision(requested, "cuda", cuda_bf16=native).name == expected


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp16"):
        choose_precision("fp16", "cpu", flags=set())


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_bf16_and_fp32_decode_the_same_faces():
    """The seed generator, random init: bf16 autocast images agree with fp32 to a few levels of 255."""
    torch.manual_seed(0)
    g = Generator(get_kind("gan").presets["seed"]).eval()
    z = torch.randn(8, g.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fp32 = g.decode(z)
        with choose_precision("bf16", "cpu").autocast("cpu")():
            bf16 = g.decode(z).float()
    a, b = to_uint8(fp32).float(), to_uint8(bf16).float()
    mse = ((a - b) ** 2).mean()
    psnr = 10 * torch.log10(255**2 / mse)
    assert psnr > 40, f"bf16 vs fp32 PSNR {psnr:.1f} dB"
    assert (a - b).abs().max() <= 16
