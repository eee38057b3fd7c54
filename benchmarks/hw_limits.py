"""The hardware limit beside a measured encoder rate (imported by the benchmarks in this folder).

The CPU's theoretical peak is ``cores x clock x FLOPs/cycle/core`` with the FLOPs/cycle of the
vector unit that precision runs on (the assumption is printed with every figure):

* AMD Zen 4 (family 25 with AVX-512): AVX-512 on two 256-bit FMA pipes -> fp32 2 x 8 x 2 = 32;
  bf16 with ``VDPBF16PS`` (a pair of bf16 products per fp32 lane) -> 64.
* Intel with AVX-512 (two 512-bit FMA units assumed; one-FMA SKUs have half): fp32 2 x 16 x 2
  = 64; ``avx512_bf16`` 128; AMX (``amx_bf16``) 1024 bf16 FLOPs/cycle/core.
* AVX2 only: fp32 2 x 8 x 2 = 32; bf16 is emulated, no faster than fp32.

The clock is the ``cpu MHz`` line of ``/proc/cpuinfo`` (the nominal clock a VM reports; the real
clock may boost above it, which is why the benchmarks also print a measured GEMM ceiling: a
2048 x 2048 matrix product in the same precision, the best rate oneDNN/BLAS reach on this CPU).
The encoder's FLOPs per patch are counted once with ``torch.utils.flop_counter`` (2 FLOPs per
multiply-add, convolutions and matrix products only).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuPeak", "cpu_peak", "gemm_gflops", "gflop_per_patch", "limit_line", "load_line"]


@dataclass(frozen=True)
class CpuPeak:
    """Theoretical peak GFLOP/s of this CPU for one precision and the assumption behind it."""

    gflops: float
    assumption: str


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_peak(precision: str, *, cores: int | None = None, clock_ghz: float | None = None) -> CpuPeak:
    """Theoretical peak of this CPU for ``precision`` ('fp32' | 'bf16') in GFLOP/s (see the
    module docstring for the FLOPs/cycle table); ``cores`` default the torch threads,
    ``clock_ghz`` the ``cpu MHz`` of /proc/cpuinfo."""
    import torch

    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    vendor = info.get("vendor_id", "")
    cores = int(cores or torch.get_num_threads())
    clock = float(clock_ghz or float(info.get("cpu MHz", "2000")) / 1000)
    amd = "AMD" in vendor
    if "avx512f" in flags:
        fp32, unit = (32, "Zen 4 AVX-512 on 2x256-bit FMA pipes") if amd else (64, "AVX-512, 2 FMA units")
    else:
        fp32, unit = 32, "AVX2, 2 FMA units"
    if precision == "bf16":
        if "amx_bf16" in flags:
            per, unit = 1024, "AMX bf16"
        elif "avx512_bf16" in flags:
            per, unit = 2 * fp32, unit + " + AVX512-BF16 dot products (2x fp32)"
        else:
            per, unit = fp32, unit + ", bf16 emulated (fp32 rate)"
    else:
        per = fp32
    gflops = cores * clock * per
    return CpuPeak(gflops, f"{cores} cores x {clock:.2f} GHz (nominal, /proc/cpuinfo) x {per} FLOPs/cycle ({unit})")


def gemm_gflops(precision: str, *, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of ``repeats`` (n x n) @ (n x n) products in ``precision`` ('fp32' | 'bf16')
    with the current torch threads: the practical compute ceiling."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    a @ b
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def gflop_per_patch(model, size: int = 224) -> float:
    """GFLOP (2 per multiply-add) of one ``(1, 3, size, size)`` forward of ``model``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return fc.get_total_flops() / 1e9


_GEMM: dict[str, float] = {}


def limit_line(patches_per_s: float, gflop: float, precision: str) -> str:
    """``X GFLOP/s = a % of the theoretical peak (assumption), b % of the measured GEMM``
    for an encoder of ``gflop`` GFLOP per patch running at ``patches_per_s``."""
    if precision not in _GEMM:
        _GEMM[precision] = gemm_gflops(precision)
    peak, gemm = cpu_peak(precision), _GEMM[precision]
    achieved = patches_per_s * gflop
    return (f"{achieved:6.0f} GFLOP/s = {100 * achieved / peak.gflops:3.0f} % of the {precision} peak "
            f"{peak.gflops:.0f} GFLOP/s [{peak.assumption}], {100 * achieved / gemm:3.0f} % of the measured "
            f"{precision} GEMM {gemm:.0f} GFLOP/s")


def load_line() -> str:
    """``load average 1.93 1.10 0.45 (2 CPUs)``: the machine is shared, say how busy it was."""
    return f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} CPUs)"
