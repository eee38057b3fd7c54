"""Encoder precision: the names ('fp32' | 'bf16' | 'fp16', and 'auto'), the CPU's native bf16,
and the ``torch.autocast`` context.

The weights always stay float32; a lower precision runs the model under ``torch.autocast``.
'auto' (the config's default, :func:`resolve_precision`) is bf16 on CUDA and on CPUs with native
bf16 dot products (the ``avx512_bf16`` or ``amx_bf16`` flag of ``/proc/cpuinfo``: Intel Cooper
Lake / Sapphire Rapids and later, AMD Zen 4 and later), fp32 on other CPUs, where bf16 is
emulated and slower. Importing this module does not import torch (the config and the CLI check
names without it).
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager, Iterable

from wsi_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "AUTO", "NATIVE_BF16_FLAGS", "normalise_precision", "default_precision", "resolve_precision",
           "cpu_flags", "has_native_bf16", "autocast_context"]

#: precision name -> name of the ``torch`` dtype autocast runs in (None: plain float32, no autocast)
PRECISIONS: dict[str, str | None] = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
#: the config value that picks the precision from the device (:func:`resolve_precision`)
AUTO = "auto"
#: ``/proc/cpuinfo`` flags of CPUs that run bf16 dot products natively (AVX512-BF16, AMX)
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def normalise_precision(precision: str) -> str:
    """Canonical precision name ('fp32' | 'bf16' | 'fp16'), recordable in H5 attrs.

    Accepts the aliases float32 / bfloat16 / float16 / half (any case).

    Raises:
        ConfigError: any other value, naming ``encoder_arguments.precision`` and the valid ones.
    """
    p = str(precision).strip().lower()
    p = _ALIASES.get(p, p)
    if p not in PRECISIONS:
        raise ConfigError(f"encoder_arguments.precision '{precision}' is not supported; "
                          f"use one of {', '.join(PRECISIONS)}")
    return p


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first ``flags`` line of ``cpuinfo`` (Linux); empty where
    the file is missing or has no such line (other systems: 'auto' then means fp32 on CPU)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def _this_cpu_flags() -> frozenset[str]:
    return cpu_flags()


def has_native_bf16(flags: Iterable[str]) -> bool:
    """Whether a CPU with these ``/proc/cpuinfo`` flags has native bf16 dot products
    (``avx512_bf16`` or ``amx_bf16``; see :data:`NATIVE_BF16_FLAGS`)."""
    return not NATIVE_BF16_FLAGS.isdisjoint(flags)


def default_precision(device: str | torch.device, flags: Iterable[str] | None = None) -> str:
    """What 'auto' means on ``device``: 'bf16' on CUDA and on a CPU with native bf16
    (:func:`has_native_bf16` of ``flags``, default this machine's :func:`cpu_flags`), else 'fp32'."""
    import torch

    if torch.device(device).type == "cuda":
        return "bf16"
    return "bf16" if has_native_bf16(_this_cpu_flags() if flags is None else flags) else "fp32"


def resolve_precision(precision: str | None, device: str | torch.device,
                      flags: Iterable[str] | None = None) -> str:
    """The precision an encoder runs in: ``precision`` normalised, or for 'auto' / None the
    device's :func:`default_precision` ('fp32' | 'bf16' | 'fp16', recordable in H5 attrs).

    Raises:
        ConfigError: an unknown name (see :func:`normalise_precision`).
    """
    if precision is None or str(precision).strip().lower() == AUTO:
        return default_precision(device, flags)
    return normalise_precision(precision)


def autocast_context(device: str | torch.device, precision: str | None) -> ContextManager:
    """``torch.autocast(device_type, dtype)`` for bf16/fp16, ``contextlib.nullcontext()`` for
    fp32 or None.

    Raises:
        ConfigError: an unknown precision (see :func:`normalise_precision`).
    """
    dtype = PRECISIONS[normalise_precision("fp32" if precision is None else precision)]
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, dtype))
