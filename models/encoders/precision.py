"""Encoder precision: the names ('fp32' | 'bf16' | 'fp16') and the ``torch.autocast`` context.

The weights always stay float32; a lower precision runs the model under ``torch.autocast``
(bf16 on CUDA by default, fp32 on the CPU, where bf16 is faster only with AMX/AVX512-BF16).
Importing this module does not import torch (the config and the CLI check names without it).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager

from wsi_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "normalise_precision", "default_precision", "autocast_context"]

#: precision name -> name of the ``torch`` dtype autocast runs in (None: plain float32, no autocast)
PRECISIONS: dict[str, str | None] = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


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


def default_precision(device: str | torch.device) -> str:
    """'bf16' on a CUDA device, else 'fp32' (CPU bf16 is faster only with AMX/AVX512-BF16)."""
    import torch

    return "bf16" if torch.device(device).type == "cuda" else "fp32"


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
