"""The hardware limits beside measured rates (imported by the benchmarks in this folder): an
encoder's GFLOP/s vs the CPU's peak, and pixel stages vs measured memory, JPEG and disk ceilings.

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

The stages that move pixels rather than FLOPs are compared with ceilings measured here, once per
process (each well under 2 s):

* memory: GB/s of ``np.copyto`` of a 256 MiB uint8 array, best of 3, in one thread and split over
  the usable cores (numpy releases the GIL; the better of the two is the ceiling - on a shared
  machine more threads can be slower). A raster stage must at least read and write its pixels.
* JPEG: Mpx/s of ``cv2.imdecode`` / ``cv2.imencode`` (libjpeg-turbo) of one RGB tile - a smooth
  colour field plus Gaussian noise (sigma 6), about 1.2 bit/px at quality 80 4:2:0, like tissue -
  in one thread or in one thread per core (OpenCV releases the GIL).
* disk: MB/s of writing a 256 MiB file of random bytes in 4 MiB chunks and ``fsync``-ing it in
  the benchmark's output directory (the file is deleted).
* RAM: ``MemTotal`` of ``/proc/meminfo``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuPeak", "cpu_peak", "gemm_gflops", "gflop_per_patch", "limit_line", "load_line", "usable_cores",
           "memcopy_gbs", "jpeg_mpxs", "disk_write_mbs", "total_ram_mib", "ram_line", "rate_line"]


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


# --------------------------------------------------------------------------- pixel-stage ceilings
_MEASURED: dict[tuple, float] = {}


def _memo(key: tuple, measure) -> float:
    if key not in _MEASURED:
        _MEASURED[key] = measure()
    return _MEASURED[key]


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _threaded_best(jobs: list, threads: int, repeats: int) -> float:
    """Best wall seconds of ``repeats`` runs of the callables ``jobs`` on ``threads`` threads."""
    from concurrent.futures import ThreadPoolExecutor

    best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(lambda job: job(), jobs))
            best = min(best, time.perf_counter() - t)
    return best


def memcopy_gbs(*, mib: int = 256, repeats: int = 3) -> float:
    """Memory ceiling, GB/s (10^9 bytes copied per second, each byte read once and written once):
    the best of ``repeats`` ``np.copyto`` of a ``mib`` MiB uint8 array, in one thread and split
    over :func:`usable_cores` threads, whichever is faster."""
    import numpy as np

    def measure() -> float:
        n = mib * 2**20
        src, dst = np.ones(n, np.uint8), np.zeros(n, np.uint8)   # pages touched before timing
        best = 0.0
        for threads in sorted({1, usable_cores()}):
            step = -(-n // threads)
            jobs = [lambda i=i: np.copyto(dst[i:i + step], src[i:i + step]) for i in range(0, n, step)]
            best = max(best, n / _threaded_best(jobs, threads, repeats) / 1e9)
        return best

    return _memo(("memcopy", mib), measure)


def _tissue_like_tile(size: int):
    """``(size, size, 3)`` uint8: a smooth random colour field plus Gaussian noise (sigma 6)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    field = cv2.resize(rng.uniform(60, 230, (32, 32, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    return np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)


def jpeg_mpxs(op: str, *, threads: int = 1, size: int = 1024, quality: int = 80,
              subsampling: str = "420") -> float:
    """JPEG ceiling, Mpx/s (10^6 px per second) of OpenCV's ``op`` ('decode' | 'encode') of a
    ``size`` x ``size`` RGB tile (:func:`_tissue_like_tile`) at ``quality`` with chroma
    ``subsampling`` '420' | '444', on ``threads`` threads each coding its own copies (best of 3
    rounds of about 0.2 s)."""
    import cv2

    def measure() -> float:
        img = _tissue_like_tile(size)
        factor = {"420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444}[subsampling]
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor]
        data = cv2.imencode(".jpg", img, params)[1]
        one = (lambda: cv2.imdecode(data, cv2.IMREAD_COLOR)) if op == "decode" else (lambda: cv2.imencode(".jpg", img, params))
        t = time.perf_counter()
        one()
        per_thread = max(2, int(0.2 / max(time.perf_counter() - t, 1e-4)))
        jobs = [lambda: [one() for _ in range(per_thread)]] * threads
        return threads * per_thread * size * size / _threaded_best(jobs, threads, 3) / 1e6

    if op not in ("decode", "encode"):
        raise ValueError(f"op must be 'decode' or 'encode', not {op!r}")
    return _memo(("jpeg", op, threads, size, quality, subsampling), measure)


def disk_write_mbs(directory: str | os.PathLike[str], *, mib: int = 256) -> float:
    """Disk ceiling, MB/s (10^6 bytes per second): writing ``mib`` MiB of random bytes in 4 MiB
    chunks to a new file in ``directory`` plus its ``fsync`` (the file is deleted)."""

    def measure() -> float:
        chunk = os.urandom(4 * 2**20)
        path = Path(directory) / f".hw_limits_disk_{os.getpid()}.tmp"
        try:
            t = time.perf_counter()
            with open(path, "wb") as f:
                for _ in range(max(1, mib // 4)):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            return max(1, mib // 4) * len(chunk) / (time.perf_counter() - t) / 1e6
        finally:
            path.unlink(missing_ok=True)

    return _memo(("disk", str(Path(directory).resolve()), mib), measure)


def total_ram_mib() -> float:
    """Physical RAM, MiB: ``MemTotal`` of ``/proc/meminfo`` (0 when it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return 0.0


def _num(x: float) -> str:
    """``2,290`` / ``41.7`` / ``0.52``: three significant digits below 1,000, then whole units."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def ram_line(peak_mib: float | None = None) -> str:
    """``peak RSS 812 MiB = 10.2 % of the total RAM 7,951 MiB (MemTotal, /proc/meminfo)``, or
    without ``peak_mib`` (MiB) just ``total RAM ...``."""
    total = total_ram_mib()
    if peak_mib is None:
        return f"total RAM {_num(total)} MiB (MemTotal, /proc/meminfo)"
    return rate_line("peak RSS", peak_mib, "MiB", total, "total RAM", "MemTotal, /proc/meminfo")


def rate_line(name: str, achieved: float, unit: str, ceiling: float, ceiling_name: str, note: str = "") -> str:
    """``render raster 412 Mpx/s = 18 % of the measured memory copy 2,290 Mpx/s (3 B/px)``:
    ``achieved`` and ``ceiling`` in the same ``unit``; ``note`` (the assumption) in brackets."""
    pct = 100 * achieved / ceiling if ceiling > 0 else float("nan")
    return (f"{name} {_num(achieved)} {unit} = {_num(pct)} % of the {ceiling_name} {_num(ceiling)} {unit}"
            + (f" ({note})" if note else ""))
