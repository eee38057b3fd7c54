"""Pyramid levels and regions: which level a map is drawn at, and level-0 <-> level px.

The rules every reader of a level or an ROI follows, written once:

* a level of ``-1`` means "the best level for downsample 32" (CLAM's ``vis_level: -1`` and
  ``seg_level: -1``), OpenSlide's ``get_best_level_for_downsample(32)``;
* a level must exist on the slide; the error names the config key to fix;
* an ROI ``(x1, y1, x2, y2)`` is in level-0 px and must be non-empty and overlap the slide;
* a level-0 coordinate maps to level ``L`` by ``ceil(x / downsample_L)`` (CLAM's canvas rule) and
  a level-0 length by ``ceil(length / downsample_L)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import ConfigError, RoiError

__all__ = ["AUTO_LEVEL_DOWNSAMPLE", "resolve_level", "level_scale", "check_roi", "roi_canvas",
           "patch_footprint_level0", "region_size_at_level", "to_level_px"]

AUTO_LEVEL_DOWNSAMPLE = 32   # level -1 = the best level for this downsample (CLAM)


def resolve_level(slide, level: int, *, name: str = "vis_level",
                  key: str = "heatmap_arguments.vis_level") -> int:
    """The pyramid level ``level`` of ``slide`` stands for: ``< 0`` -> the best level for
    downsample 32, else ``level`` itself once checked.

    ``name`` and ``key`` word the error (``seg_level`` / a process-list column, ``--vis_level``).

    Raises:
        ConfigError: the level does not exist on the slide (names the slide, the levels and ``key``).
    """
    if level < 0:
        return int(slide.best_level_for_downsample(AUTO_LEVEL_DOWNSAMPLE))
    if level >= slide.level_count:
        raise ConfigError(
            f"{slide.slide_id}: {name} {level} does not exist (levels 0-{slide.level_count - 1}); "
            f"set {key} to -1 (the best level for downsample {AUTO_LEVEL_DOWNSAMPLE}) or a valid level"
        )
    return int(level)


def level_scale(slide, level: int) -> np.ndarray:
    """``(2,)`` float64 ``(1 / dsx, 1 / dsy)``: level-0 px -> px at ``level``."""
    dsx, dsy = slide.level_downsamples[level]
    return np.array([1 / dsx, 1 / dsy])


def to_level_px(coords: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(N, 2)`` level-0 px -> ``(N, 2)`` int64 px at the level of ``scale`` (ceil, as CLAM)."""
    return np.ceil(np.asarray(coords) * scale).astype(np.int64)


def check_roi(roi: Sequence[int], level0: tuple[int, int], *, slide_id: str | None = None
              ) -> tuple[int, int, int, int]:
    """The ROI ``(x1, y1, x2, y2)`` (level-0 px) as ints, validated against the level-0 size.

    Raises:
        RoiError: the ROI is empty or lies entirely outside the slide (prefixed by ``slide_id``).
    """
    x1, y1, x2, y2 = (int(v) for v in roi)
    w0, h0 = level0
    where = f"{slide_id}: " if slide_id else ""
    box = f"ROI (x1={x1}, y1={y1}, x2={x2}, y2={y2})"
    if x2 <= x1 or y2 <= y1:
        raise RoiError(f"{where}{box} is empty (need x2 > x1 and y2 > y1) on a {w0}x{h0} slide; "
                       "x1,y1,x2,y2 are level-0 px, fix them in the process list")
    if x1 >= w0 or y1 >= h0 or x2 <= 0 or y2 <= 0:
        raise RoiError(f"{where}{box} lies outside the {w0}x{h0} slide; "
                       "x1,y1,x2,y2 are level-0 px, fix them in the process list")
    return x1, y1, x2, y2


def roi_canvas(slide, roi: Sequence[int] | None, scale: np.ndarray, level: int
               ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(top_left, bottom_right, size)`` of a canvas at ``level``: level-0 px corners and the
    ``(w, h)`` px size at ``level`` (the whole level without an ROI).

    Raises:
        RoiError: the ROI is empty or outside the slide, or smaller than one px at ``level``.
    """
    if roi is None:
        return (0, 0), tuple(slide.level_dimensions[0]), tuple(slide.level_dimensions[level])
    x1, y1, x2, y2 = check_roi(roi, tuple(slide.level_dimensions[0]), slide_id=slide.slide_id)
    tl, br = np.array([x1, y1]), np.array([x2, y2])
    size = (br * scale).astype(int) - (tl * scale).astype(int)
    if np.any(size <= 0):
        raise RoiError(f"{slide.slide_id}: ROI (x1={x1}, y1={y1}, x2={x2}, y2={y2}) is empty at level {level} "
                       f"(under one px); x1,y1,x2,y2 are level-0 px, enlarge it in the process list")
    return (x1, y1), (x2, y2), (int(size[0]), int(size[1]))


def region_size_at_level(slide, level: int, roi: Sequence[int] | None) -> tuple[int, int]:
    """``(w, h)`` px at ``level`` of the whole slide or of ``roi`` (level-0 px), truncated."""
    if roi is None:
        return tuple(slide.level_dimensions[level])
    dsx, dsy = slide.level_downsamples[level]
    return int((roi[2] - roi[0]) / dsx), int((roi[3] - roi[1]) / dsy)


def patch_footprint_level0(slide, *, patch_size: int, patch_level: int, custom_downsample: int = 1
                           ) -> tuple[int, int]:
    """``(w, h)`` level-0 px covered by one patch: ``patch_size * downsample(patch_level) *
    custom_downsample`` (CLAM's ``vis_patch_size``). ``patch_level`` past the slide's last level
    uses the last level."""
    dx, dy = slide.level_downsamples[min(int(patch_level), slide.level_count - 1)]
    return int(patch_size * dx * custom_downsample), int(patch_size * dy * custom_downsample)
