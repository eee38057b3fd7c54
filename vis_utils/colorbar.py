"""Colour bars and scale records: what a colour of a score map means, in score units.

* :func:`save_colorbar` - a horizontal colour bar PNG whose ticks are in score units (raw
  attention logit, probability, 0-100 percentile), titled with where the scale came from (this
  slide / across N slides / config) and its thresholds. Arrow ends mark squashed values.
* :func:`save_scale_json` - the same numbers as JSON (``lo``, ``hi``, thresholds, source, ...).
* :func:`scale_attrs` / :func:`scale_from_attrs` - the numbers as HDF5 attributes (prefixed
  ``scale_``) and back.

matplotlib is used through its object API (``Figure`` + ``FigureCanvasAgg``): no pyplot state,
no global backend switch, nothing left open after the call.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from wsi_core.errors import ConfigError
from wsi_core.io import atomic_path

from .normalize import ScoreScale

__all__ = ["save_colorbar", "save_scale_json", "scale_attrs", "scale_from_attrs",
           "COLORBAR_SIZE_PX", "ATTR_PREFIX"]

COLORBAR_SIZE_PX = (640, 160)   # (width, height) px of the PNG at COLORBAR_DPI
COLORBAR_DPI = 100
ATTR_PREFIX = "scale_"


def _cmap(name: str):
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise ConfigError(f"unknown colormap {name!r} in heatmap_arguments (cmap / att_cmap / score_cmap); "
                          "use a matplotlib colormap name such as 'jet', 'magma' or 'coolwarm'") from None


def _extend(scale: ScoreScale) -> str:
    """Which ends of the bar stand for squashed (clipped) scores: 'neither'|'min'|'max'|'both'."""
    low = scale.kind == "fixed" or scale.quantity == "score" or (scale.att_lower_threshold or 0.0) > 0.0
    high = scale.kind == "fixed" or scale.quantity == "score" or (
        scale.att_upper_threshold is not None and scale.att_upper_threshold < 1.0)
    return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get((low, high), "both")


def save_colorbar(path: str | os.PathLike[str], *, cmap: str, scale: ScoreScale, label: str,
                  units: str, size_px: tuple[int, int] = COLORBAR_SIZE_PX) -> Path:
    """Write a colour bar PNG for a score map drawn with ``cmap`` on ``scale``.

    Args:
        path: output ``.png`` (written atomically).
        cmap: matplotlib colormap name (the map's colours).
        scale: the :class:`ScoreScale` the map was drawn with; ticks run from ``scale.lo`` to
            ``scale.hi`` in score units.
        label: what is drawn, e.g. ``'attention'`` or ``'P(tumour)'``.
        units: its units, e.g. ``'raw logit'``, ``'percentile (0-100)'``, ``'probability'``.
        size_px: ``(width, height)`` px of the PNG (at 100 dpi).

    Returns:
        The written path. The axis label is ``'<label> (<units>)'``; the title is
        ``scale.describe()`` (this slide / across N slides / fixed, and the thresholds).

    Raises:
        ConfigError: unknown colormap. WsiHeatmapsError: the directory is not writable.
    """
    cm = _cmap(cmap)
    lo, hi = float(scale.lo), float(scale.hi)
    title = scale.describe()
    if hi <= lo:  # every score equal: a bar around that value
        pad = max(abs(lo) * 1e-3, 1e-6)
        lo, hi = lo - pad, hi + pad
        title += " (all scores equal)"
    w, h = (int(v) for v in size_px)
    fig = Figure(figsize=(w / COLORBAR_DPI, h / COLORBAR_DPI), dpi=COLORBAR_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.06, 0.42, 0.88, 0.2))
    mappable = ScalarMappable(norm=Normalize(vmin=lo, vmax=hi), cmap=cm)
    bar = fig.colorbar(mappable, cax=ax, orientation="horizontal", extend=_extend(scale))
    bar.set_label(f"{label} ({units})", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    ax.set_title(title, fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=COLORBAR_DPI)
    fig.clear()
    return Path(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, ScoreScale):
        return value.to_dict()
    raise TypeError(f"cannot store {type(value).__name__} in a scale JSON")


def save_scale_json(path: str | os.PathLike[str], scale: ScoreScale, **extra: Any) -> Path:
    """Atomically write the scale's numbers (:meth:`ScoreScale.to_dict`) plus ``extra`` fields
    (e.g. ``cmap='magma', slide_ids=[...], label='attention'``) as an indented JSON object.

    Raises:
        ValueError: an ``extra`` key collides with a scale field.
        TypeError: an ``extra`` value is not JSON-able (numpy arrays and paths are converted).
        WsiHeatmapsError: the directory is not writable.
    """
    data = scale.to_dict()
    clash = sorted(set(extra) & set(data))
    if clash:
        raise ValueError(f"save_scale_json: extra fields {clash} collide with the scale's own fields")
    data.update(extra)
    text = json.dumps(data, indent=2, default=_jsonable, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def scale_attrs(scale: ScoreScale) -> dict[str, Any]:
    """HDF5 attributes of a scale: ``{'scale_kind': ..., 'scale_lo': ..., ...}`` (None fields
    are left out; HDF5 has no null)."""
    return {ATTR_PREFIX + k: v for k, v in scale.to_dict().items() if v is not None}


def scale_from_attrs(attrs: dict[str, Any]) -> ScoreScale | None:
    """The scale stored by :func:`scale_attrs` in an attribute mapping, or None when absent."""
    sub = {k[len(ATTR_PREFIX):]: v for k, v in dict(attrs).items() if str(k).startswith(ATTR_PREFIX)}
    if "kind" not in sub:
        return None
    return ScoreScale.from_dict(sub)
