"""Digital Slide Archive / HistomicsUI: patch scores as a large_image annotation with one heatmap element.

The format is large_image's annotation document (``girder_large_image_annotation.models.annotation.
AnnotationSchema.annotationSchema``): ``{"name", "description", "attributes", "elements": [...]}``,
coordinates in level-0 (base layer) px with the origin at the top-left. HistomicsUI draws

- a ``griddata`` element with ``interpretation: "heatmap"`` — ``origin`` ``[x, y, 0]``, spacing ``dx`` /
  ``dy``, ``gridWidth`` and row-major ``values`` — as a geojs heatmap with one point per grid cell
  at ``origin + (col * dx, row * dy)``;
- a ``heatmap`` element — ``points`` ``[x, y, 0, value]`` — the same way for points off a lattice.

Patches on one lattice (a CLAM grid of one step, the blockmap, a bag's grid) become ``griddata``
(one number per cell, the compact form); the patch centres are the grid points and cells without
a patch are 0, which the heatmap draws as no heat. Patches off one lattice (per-contour grid
origins, or a lattice that would be over 4x the patches) become ``heatmap`` points at their
centres, so no value is ever put at a wrong place. ``colorRange`` / ``rangeValues`` give the
colour of each value (``normalizeRange: false``: the range values are the data's own units); each
point heats a disc of half the patch side (``radius`` in level-0 px, ``scaleWithZoom``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import FeatureFileError
from .io import atomic_path

__all__ = ["dsa_annotation", "write_dsa_annotation", "lattice_of", "rgba_strings"]

#: a lattice with more cells than this many times the patches is written as points instead
MAX_GRID_FILL = 4


def lattice_of(coords: np.ndarray) -> tuple[int, int] | None:
    """The ``(dx, dy)`` level-0 px step of the one lattice holding every ``(N, 2)`` coordinate
    (greatest common divisor of the distinct x and y gaps), None when there is none (a single
    column or row gets step 0 on that axis) or two patches share a position."""
    c = np.asarray(coords, np.int64).reshape(-1, 2)
    if len(np.unique(c, axis=0)) != len(c):
        return None
    steps = []
    for axis in (0, 1):
        gaps = np.diff(np.unique(c[:, axis]))
        steps.append(int(np.gcd.reduce(gaps)) if len(gaps) else 0)
    return steps[0], steps[1]


def _grid_element(c: np.ndarray, v: np.ndarray, size: tuple[int, int], step: tuple[int, int]) -> dict[str, Any] | None:
    w, h = size
    dx, dy = (s if s > 0 else d for s, d in zip(step, size))
    x0, y0 = (int(m) for m in c.min(axis=0))
    col, row = (c[:, 0] - x0) // dx, (c[:, 1] - y0) // dy
    width, height = int(col.max()) + 1, int(row.max()) + 1
    if width * height > MAX_GRID_FILL * len(c) + 16:
        return None
    values = np.zeros(width * height, np.float64)
    values[row * width + col] = v
    return {"type": "griddata", "interpretation": "heatmap", "origin": [x0 + w / 2, y0 + h / 2, 0],
            "dx": dx, "dy": dy, "gridWidth": width, "values": values.tolist(),
            "radius": max(w, h) / 2, "scaleWithZoom": True}


def dsa_annotation(coords: np.ndarray, size: tuple[int, int], values: np.ndarray, *, name: str,
                   mpp: tuple[float, float] | None, colors: Sequence[str], range_values: Sequence[float],
                   value_name: str = "attention_percentile", source: str | None = None) -> dict[str, Any]:
    """The large_image annotation of patch ``values`` (``(N,)`` finite numbers) at ``coords``
    ``(N, 2)`` int64 level-0 px top-left, each ``size`` ``(w, h)`` level-0 px (see the module).

    ``colors`` are CSS colours (``rgba(r, g, b, a)``) at ``range_values`` (the values' own units,
    weakly increasing, one per colour). ``mpp`` is the slide's level-0 µm/px ``(x, y)``: the
    annotation is always in level-0 px; without mpp its description says that no µm scale is known.

    Raises:
        FeatureFileError: no patches, ``values`` not ``(N,)`` finite numbers, or ``colors`` and
        ``range_values`` of different lengths.
    """
    c = np.asarray(coords, np.int64).reshape(-1, 2)
    v = np.asarray(values, np.float64).reshape(-1)
    if len(c) == 0:
        raise FeatureFileError(f"DSA annotation {name!r}: no patches to export (the score file is empty)")
    if len(v) != len(c) or not np.all(np.isfinite(v)):
        raise FeatureFileError(f"DSA annotation {name!r}: {value_name} needs {len(c)} finite values "
                               f"(got {len(v)}, some NaN/Inf or missing)")
    if len(colors) != len(range_values):
        raise FeatureFileError(f"DSA annotation {name!r}: {len(colors)} colours for {len(range_values)} range values")
    w, h = (int(s) for s in size)
    step = lattice_of(c)
    element = _grid_element(c, v, (w, h), step) if step is not None else None
    if element is None:
        pts = np.column_stack([c[:, 0] + w / 2, c[:, 1] + h / 2, np.zeros(len(c)), v])
        element = {"type": "heatmap", "points": pts.tolist(), "radius": max(w, h) / 2, "scaleWithZoom": True}
    element.update({"colorRange": list(colors), "rangeValues": [float(r) for r in range_values],
                    "normalizeRange": False})
    scale = (f"slide mpp {mpp[0]:.4g} x {mpp[1]:.4g} µm/px" if mpp is not None else
             "the slide records no mpp, so no µm scale is known: units are level-0 px only")
    return {
        "name": name,
        "description": f"{value_name} of {len(c)} patches ({w} x {h} level-0 px each); coordinates in "
                       f"level-0 px; {scale}. Written by wsi-heatmaps.",
        "display": {"visible": True},
        "attributes": {"wsi_heatmaps": {"units": "level-0 px", "mpp": None if mpp is None else [float(m) for m in mpp],
                                        "values": value_name, "n_patches": int(len(c)),
                                        "patch_size_level0": [w, h], "source": source}},
        "elements": [element],
    }


def write_dsa_annotation(path: str | os.PathLike[str], coords: np.ndarray, size: tuple[int, int], values: np.ndarray,
                         **kw: Any) -> Path:
    """Write :func:`dsa_annotation` as JSON (atomic); HistomicsUI's *Upload annotation* reads it.
    Raises FeatureFileError as :func:`dsa_annotation`."""
    doc = dsa_annotation(coords, size, values, **kw)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, allow_nan=False, separators=(",", ":")))
    return path


def rgba_strings(rgb: np.ndarray, alpha: float) -> list[str]:
    """``(K, 3)`` uint8 RGB -> large_image colour strings ``rgba(r, g, b, alpha)``."""
    a = f"{min(max(float(alpha), 0.0), 1.0):.3f}"
    return [f"rgba({int(r)}, {int(g)}, {int(b)}, {a})" for r, g, b in np.asarray(rgb, np.uint8).reshape(-1, 3)]
