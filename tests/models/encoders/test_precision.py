"""models.encoders.precision: names, aliases, 'auto' (native CPU bf16 detection) and autocast contexts."""
from __future__ import annotations

import contextlib

import pytest
import torch

from models.encoders import (autocast_context, create_encoder, default_precision, has_native_bf16, normalise_precision,
                             resolve_precision)
from models.encoders.precision import cpu_flags
from wsi_core.errors import ConfigError


def test_precision_names_and_contexts() -> None:
    assert [normalise_precision(p) for p in ("fp32", "BF16", "bfloat16", "float16", "half")] == \
        ["fp32", "bf16", "bf16", "fp16", "fp16"]
    for bad in ("int8", "fp64", ""):
        with pytest.raises(ConfigError) as info:
            normalise_precision(bad)
        assert str(info.value) == f"encoder_arguments.precision '{bad}' is not supported; use one of fp32, bf16, fp16"
    with pytest.raises(ConfigError, match="encoder_arguments.precision 'int8'"):
        create_encoder("resnet50_trunc", precision="int8")  # checked before anything is built
    plain = ["fpu", "sse2", "avx2", "avx512f", "avx512_vnni"]
    assert (default_precision("cpu", plain), default_precision("cuda", plain), default_precision(torch.device("cuda:1"))) == \
        ("fp32", "bf16", "bf16")
    assert isinstance(autocast_context("cpu", "fp32"), contextlib.nullcontext)
    assert isinstance(autocast_context(torch.device("cpu"), None), contextlib.nullcontext)
    ctx = autocast_context("cpu", "fp16")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.float16 and ctx.device == "cpu"


# flag lists of real CPUs (abridged /proc/cpuinfo): Zen 4 and Sapphire Rapids have native bf16,
# Ice Lake / Zen 3 have AVX-512 or AVX2 without it
ZEN4 = "fpu sse2 avx2 fma avx512f avx512dq avx512_vnni avx512_bf16 vaes".split()
SAPPHIRE_RAPIDS = "fpu sse2 avx2 avx512f avx512_vnni avx512_fp16 amx_bf16 amx_tile amx_int8".split()
ICE_LAKE = "fpu sse2 avx2 avx512f avx512dq avx512_vnni avx512_vbmi2".split()
ZEN3 = "fpu sse2 avx avx2 fma vaes".split()


@pytest.mark.parametrize(("flags", "native"), [(ZEN4, True), (SAPPHIRE_RAPIDS, True), (ICE_LAKE, False),
                                               (ZEN3, False), ([], False), (["amx_tile"], False)])
def test_auto_picks_bf16_only_on_cpus_with_native_bf16(flags, native) -> None:
    assert has_native_bf16(flags) is native
    want = "bf16" if native else "fp32"
    assert (resolve_precision("auto", "cpu", flags), resolve_precision(None, "cpu", flags),
            resolve_precision(" AUTO ", torch.device("cpu"), flags)) == (want, want, want)
    # CUDA is bf16 whatever the host CPU; an explicit precision is kept everywhere
    assert resolve_precision("auto", "cuda", flags) == "bf16"
    assert (resolve_precision("fp32", "cpu", flags), resolve_precision("bfloat16", "cpu", flags)) == ("fp32", "bf16")
    with pytest.raises(ConfigError, match="encoder_arguments.precision 'int8'"):
        resolve_precision("int8", "cpu", flags)


def test_cpu_flags_read_the_flags_line(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert has_native_bf16(cpu_flags(info))
    assert cpu_flags(tmp_path / "missing") == frozenset()          # not Linux: auto means fp32 on CPU
    (tmp_path / "noflags").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "noflags") == frozenset()
