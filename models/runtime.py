"""Process-level settings that make CPU inference fast without changing a single output bit.

glibc serves every allocation above ``M_MMAP_THRESHOLD`` with a fresh ``mmap`` and returns it on
free, so each convolution's activation (hundreds of MB at batch 64) is page-faulted in anew:
measured here, resnet50_trunc at 224 px spent more time in the kernel than in the convolutions
(14.0 patches/s, 4.7 M minor faults for 128 patches). Raising the mmap and trim thresholds keeps
those blocks in the heap for reuse: 35.7 patches/s, bit-identical features
(``benchmarks/bench_encoder.py``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_cpu_allocator(*, mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 31) -> bool:
    """Raise glibc's mmap/trim thresholds (bytes) once per process; no-op elsewhere.

    Freed activation memory then stays in the heap for the next batch instead of going back to
    the OS (peak RSS is unchanged; RSS is not trimmed back after a run). Returns whether the
    setting took effect (False on non-glibc systems).
    """
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    except (OSError, AttributeError):
        ok = False
    _done = ok
    log.debug("glibc mallopt thresholds %s", "raised" if ok else "unavailable")
    return ok
