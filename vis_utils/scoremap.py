"""Class score maps: per-patch class evidence drawn hot, optionally shaded by attention.

What :func:`render_score_map` draws (``vis_level`` canvas; same geometry as
:func:`vis_utils.heatmap.render_heatmap`):

1. Patch ``i`` covers the canvas box ``ceil(coord_i * scale)`` + ``[0, ceil(patch * scale))``
   (ROI: patches with ``(x1, y1) <= coord <= (x2, y2)``, coords relative to ``(x1, y1)``).
2. ``v`` = per-pixel mean of ``values01`` (already on the colormap's 0-1 scale, e.g. from
   :meth:`vis_utils.normalize.ScoreScale.apply`) over the patches covering the pixel;
   ``colour = LUT[clip(int(v * N), 0, N - 1)]`` (uint8 matplotlib LUT, :mod:`vis_utils.raster`),
   so equal values give equal colours on every slide.
3. A pixel is coloured when a patch covers it, it is inside the tissue contours (minus holes)
   when ``contours`` are given, and - with ``mask_threshold`` - the slide is darker there than
   that grey level (:func:`vis_utils.normalize.background_mask`).
4. Blending with the slide canvas (read in CLAM's 1024-px blocks):

   * without ``shade``: ``cv2.addWeighted(colour, alpha, slide, 1 - alpha, 0)`` (as the
     attention heatmap; this path *is* :func:`~vis_utils.heatmap.render_on_canvas`);
   * with ``shade`` (``shade_by_attention``; Marugoto's score map, whose opacity is the scaled
     attention): ``a`` = per-pixel mean of ``shade`` (normalised attention in [0, 1]) and the
     pixel opacity is ``w = float32(alpha * a)``::

         out = rint(colour * w + slide * (1 - w))       (float32, per channel, -> uint8)

     so high-attention tissue shows the class colour and low-attention tissue the slide.

No loop over patches: the means come from the difference-array cell grid of
:mod:`vis_utils.raster`, computed in row bands (memory of the order of one output band).

Output names of the maps: ``heatmaps.layout.class_map_name``.
"""
from __future__ import annotations

import numpy as np

from wsi_core.errors import ConfigError
from wsi_core.levels import level_scale, resolve_level, roi_canvas, to_level_px
from wsi_core.slide import Slide
from wsi_core.tissue import TissueContours

from .heatmap import HeatmapStyle, read_canvas, render_on_canvas
from .normalize import background_mask, check_mask_threshold
from .raster import (band_heights, build_cells, cell_means, cell_stats, colormap_lut, copy_masked, expand_cells,
                     lut_indices, row_bands, tissue_mask)

__all__ = ["render_score_map"]


def _check_inputs(values01, coords, shade, slide_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    v = np.asarray(values01)
    v = v.reshape(-1) if v.ndim == 2 and v.shape[1:] == (1,) else v
    c = np.asarray(coords)
    if v.ndim != 1 or c.ndim != 2 or c.shape[1:] != (2,) or len(v) != len(c):
        raise ValueError(f"{slide_id}: score-map values {v.shape} and coords {c.shape} do not match; "
                         "expected (N,) values and (N, 2) level-0 coords")
    if v.dtype.kind not in "biuf" or not np.all(np.isfinite(v)) or (v.size and (v.min() < 0 or v.max() > 1)):
        raise ValueError(f"{slide_id}: score-map values must be finite and in [0, 1]; "
                         "scale them with ScoreScale.apply first")
    s = None
    if shade is not None:
        s = np.asarray(shade)
        s = s.reshape(-1) if s.ndim == 2 and s.shape[1:] == (1,) else s
        if s.shape != v.shape or s.dtype.kind not in "biuf" or not np.all(np.isfinite(s)) \
                or (s.size and (s.min() < 0 or s.max() > 1)):
            raise ValueError(f"{slide_id}: shade must be ({len(v)},) finite values in [0, 1] (normalised "
                             f"attention of the same patches), got shape {s.shape}")
        s = s.astype(np.float64)
    return v.astype(np.float64), c, s


def _render_shaded(canvas: np.ndarray, values: np.ndarray, shade: np.ndarray, coords: np.ndarray, *,
                   patch_size: tuple[int, int], lut: np.ndarray, alpha: float,
                   tissue: np.ndarray | None) -> np.ndarray:
    """Step 4 with ``shade``, in place on ``canvas`` (see the module docstring)."""
    h, w = canvas.shape[:2]
    every = np.ones(len(values), dtype=bool)
    cells = build_cells(coords[:, 0], coords[:, 1], patch_size, (w, h), values, every)
    shades = build_cells(coords[:, 0], coords[:, 1], patch_size, (w, h), shade, every)
    for a, b in row_bands(h, w):
        ca, cb = cells.cell_rows(a, b)
        sums, counts, _ = cell_stats(cells, ca, cb)
        covered = counts > 0
        cols = np.flatnonzero(covered.any(axis=0))
        if cols.size == 0:
            continue
        k0, k1 = int(cols[0]), int(cols[-1]) + 1
        x0, x1 = int(cells.xs[k0]), int(cells.xs[k1])
        heights, widths = band_heights(cells, ca, cb, a, b), cells.widths[k0:k1]
        idx = lut_indices(cell_means(sums, counts, cells.bits, binarize=False)[:, k0:k1], len(lut))
        shade_sums, _, _ = cell_stats(shades, ca, cb)
        weight = (alpha * cell_means(shade_sums, counts, shades.bits, binarize=False)[:, k0:k1]).astype(np.float32)
        mask = expand_cells(covered[:, k0:k1].view(np.uint8), heights, widths)
        if tissue is not None:
            mask &= tissue[a:b, x0:x1].view(np.uint8)
        region = canvas[a:b, x0:x1]
        wpx = expand_cells(weight, heights, widths)[..., None]
        colour = expand_cells(lut[idx], heights, widths).astype(np.float32)
        blended = np.rint(colour * wpx + region.astype(np.float32) * (np.float32(1) - wpx)).astype(np.uint8)
        copy_masked(blended, mask, region)
    return canvas


def render_score_map(slide: Slide, values01: np.ndarray, coords: np.ndarray, *,
                     patch_size_level0: tuple[int, int], vis_level: int,
                     contours: TissueContours | None, cmap: str, alpha: float, shade: np.ndarray | None = None,
                     roi: tuple[int, int, int, int] | None = None, mask_threshold: int | None = None,
                     use_holes: bool = True, alpha_key: str = "heatmap_arguments.score_alpha") -> np.ndarray:
    """Draw per-patch values (class evidence or attention, already scaled to [0, 1]) on a slide.

    Args:
        slide: an open ``wsi_core.Slide`` (or anything with its reading interface).
        values01: ``(N,)`` (or ``(N, 1)``) float in [0, 1] - scores after ``ScoreScale.apply``.
        coords: ``(N, 2)`` int level-0 px top-left ``(x, y)`` of each patch.
        patch_size_level0: ``(w, h)`` level-0 px of one patch.
        vis_level: pyramid level of the canvas; ``< 0`` -> best level for downsample 32.
        contours: ``TissueContours`` (level-0 px) limiting the colour to tissue, or None.
        cmap: matplotlib colormap name (``score_cmap`` / ``att_cmap``).
        alpha: colour weight 0-1 (``shade``: the opacity at attention 1).
        shade: ``(N,)`` float in [0, 1] normalised attention of the same patches, or None
            (``shade_by_attention``; formula in the module docstring).
        roi: ``(x1, y1, x2, y2)`` level-0 px, or None for the whole slide.
        mask_threshold: grey level 0-255; slide pixels at least this bright are not coloured.
        use_holes: cut tissue holes out of the mask.
        alpha_key: the config key ``alpha`` came from (named in the error message).

    Returns:
        ``(h, w, 3)`` uint8 RGB, ``h, w`` = the level (or ROI) size at ``vis_level``.

    Raises:
        ConfigError: ``vis_level`` not a level of the slide, ``alpha`` outside [0, 1], bad
            ``mask_threshold``, unknown ``cmap``.
        RoiError: the ROI is empty or outside the slide.
        ValueError: values / shade / coords of the wrong shape, NaN / Inf, or outside [0, 1].
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"{alpha_key} must be in [0, 1], got {alpha}")
    check_mask_threshold(mask_threshold)
    lut = colormap_lut(cmap)
    vis_level = resolve_level(slide, vis_level)
    values, coords, shade = _check_inputs(values01, coords, shade, slide.slide_id)
    scale = level_scale(slide, vis_level)
    top_left, bot_right, region_size = roi_canvas(slide, roi, scale, vis_level)
    if roi is not None:
        keep = np.all(coords >= np.array(top_left), axis=1) & np.all(coords <= np.array(bot_right), axis=1)
        values, coords = values[keep], coords[keep] - np.array(top_left)
        shade = None if shade is None else shade[keep]
    patch_size = tuple(int(v) for v in to_level_px(patch_size_level0, scale))
    coords = to_level_px(coords, scale)
    tissue = None
    if contours is not None:
        tissue = tissue_mask(contours, region_size=region_size, scale=(scale[0], scale[1]),
                             top_left=top_left, use_holes=use_holes)
    canvas = read_canvas(slide, vis_level=vis_level, top_left=top_left, region_size=region_size)
    if mask_threshold is not None:
        fg = ~background_mask(canvas, mask_threshold)
        tissue = fg if tissue is None else tissue & fg
    if shade is None:
        return render_on_canvas(canvas, values, coords, patch_size=patch_size, threshold=0.0,
                                style=HeatmapStyle(cmap=cmap, alpha=float(alpha)), tissue=tissue, inplace=True)
    return _render_shaded(canvas, values, shade, coords, patch_size=patch_size, lut=lut,
                          alpha=float(alpha), tissue=tissue)
