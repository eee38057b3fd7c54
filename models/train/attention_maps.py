"""Attention images of a bag for TensorBoard, drawn with the project's renderer
(:func:`vis_utils.heatmap.render_on_canvas`).

* Spatial (:func:`spatial_attention_image`): each patch at its level-0 ``(x, y)`` on a white
  canvas at ``downsample`` level-0 px per canvas px (grown so that the canvas side stays within
  ``max_size``); pixels covered by several patches show their mean; colour = the rank percentile
  of the raw attention (0 = lowest, 100 = highest) through ``cmap``, as CLAM's heatmaps.
* Grid (:func:`grid_attention_image`): the same colours in a square grid, row-major in bag order,
  for a bag without coordinates or whose coordinate count differs from its attention count.
"""
from __future__ import annotations

import math

import numpy as np

from vis_utils.heatmap import HeatmapStyle, render_on_canvas
from vis_utils.percentiles import rank_percentiles

__all__ = ["SCALE_TEXT", "spatial_attention_image", "grid_attention_image", "patch_size_from_coords"]

SCALE_TEXT = ("colour = rank percentile of the raw attention within the slide (0 = lowest, 100 = highest), "
              "colormap {cmap}; white = no patch")


def patch_size_from_coords(coords: np.ndarray, attrs: dict | None = None) -> int:
    """Level-0 patch side: TRIDENT's ``patch_size_level0``, else CLAM's ``patch_size`` times
    ``2 ** patch_level`` (a close bound for pyramid levels), else the smallest positive step between
    distinct x (or y) coordinates, else 256."""
    attrs = attrs or {}
    if "patch_size_level0" in attrs:
        return int(attrs["patch_size_level0"])
    if "patch_size" in attrs:
        return int(attrs["patch_size"]) * int(2 ** int(attrs.get("patch_level", 0)))
    steps = [np.diff(np.unique(coords[:, a])) for a in (0, 1)]
    steps = np.concatenate([s[s > 0] for s in steps])
    return int(steps.min()) if steps.size else 256


def _render(scores: np.ndarray, canvas_xy: np.ndarray, patch: int, size: tuple[int, int], cmap: str) -> np.ndarray:
    w, h = size
    canvas = np.full((h, w, 3), 255, np.uint8)
    style = HeatmapStyle(cmap=cmap, alpha=1.0, segment=False)
    return render_on_canvas(canvas, rank_percentiles(scores) / 100.0, canvas_xy, patch_size=(patch, patch),
                            threshold=0.0, style=style, inplace=True)


def spatial_attention_image(attention: np.ndarray, coords: np.ndarray, *, patch_size_level0: int,
                            downsample: int = 32, max_size: int = 1024, cmap: str = "jet") -> tuple[np.ndarray, int]:
    """``(image (h, w, 3) uint8 RGB, downsample used)`` of raw ``attention`` (N,) at ``coords``
    (N, 2) int64 level-0 px top-left; the canvas spans the patches' bounding box.

    Raises:
        ValueError: ``coords`` is not (N, 2) for the N attention values.
    """
    a = np.asarray(attention, np.float64).reshape(-1)
    c = np.asarray(coords, np.int64)
    if c.ndim != 2 or c.shape != (len(a), 2):
        raise ValueError(f"{len(a)} attention scores but coords of shape {c.shape}")
    origin = c.min(axis=0)
    extent = c.max(axis=0) - origin + patch_size_level0
    ds = max(int(downsample), int(math.ceil(extent.max() / max_size)))
    xy = (c - origin) // ds
    patch = max(1, int(math.ceil(patch_size_level0 / ds)))
    size = (int(math.ceil(extent[0] / ds)), int(math.ceil(extent[1] / ds)))
    return _render(a, xy, patch, size, cmap), ds


def grid_attention_image(attention: np.ndarray, *, cell: int = 8, max_size: int = 1024, cmap: str = "jet") -> np.ndarray:
    """Image (h, w, 3) uint8 of raw ``attention`` (N,) in a ceil(sqrt(N))-wide grid, row-major."""
    a = np.asarray(attention, np.float64).reshape(-1)
    cols = max(1, int(math.ceil(math.sqrt(len(a)))))
    rows = max(1, int(math.ceil(len(a) / cols)))
    cell = max(1, min(int(cell), max_size // cols))
    i = np.arange(len(a))
    xy = np.stack([(i % cols) * cell, (i // cols) * cell], axis=1)
    return _render(a, xy, cell, (cols * cell, rows * cell), cmap)
