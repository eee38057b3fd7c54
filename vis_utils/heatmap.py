"""Attention heatmaps on a slide: CLAM ``drawHeatmap`` / ``visHeatmap`` semantics, vectorised.

What a pixel of the output shows (``vis_level`` canvas; level-0 px are scaled by
``(1 / dsx, 1 / dsy)`` of that level):

1. Patch ``i`` covers the canvas box ``ceil(coord_i * scale)`` + ``[0, ceil(patch_size * scale))``
   (clipped at the canvas edge). With an ROI ``(x1, y1, x2, y2)`` only patches with
   ``(x1, y1) <= coord <= (x2, y2)`` (inclusive, CLAM ``screen_coords``) are kept and coords are
   taken relative to ``(x1, y1)``; the canvas is ``int(x2 * sx) - int(x1 * sx)`` wide (same in y).
2. Scores are flattened; ``convert_to_percentiles`` turns them into rank percentiles (0-100);
   then they are divided by 100 (in their own float dtype, as CLAM does in place).
3. ``threshold`` = ``1 / N`` (``binary_thresh < 0``, N = all scores before the ROI screen) or
   ``binary_thresh`` when binarizing, else 0. A patch contributes ``1`` (binarize) or its score
   when ``score >= threshold``, else 0; every patch counts. The pixel value is the mean over the
   patches covering it (``np.around`` of it when binarizing); 0 where none does.
4. With ``blur`` that value raster is Gaussian-blurred (``ksize = int(patch * (1 - overlap)) * 2
   + 1``, sigma 0) before colouring, and the coloured image again afterwards.
5. A pixel is coloured (matplotlib cmap -> uint8 LUT) when a patch with ``score >= threshold``
   covers it and, with ``segment``, it lies in the tissue mask (contours minus holes).
6. Base image: the slide region at ``vis_level`` (white with ``blank_canvas``). With
   ``alpha < 1`` the result is ``cv2.addWeighted(coloured, alpha, canvas, 1 - alpha, 0)`` where
   ``canvas`` is built from CLAM's 1024-px block reads (:func:`read_canvas`) - read **once** and
   used as base too (CLAM reads the slide a second time in one piece for the base; the two differ
   by a sub-pixel shift when the level downsample is not an integer, which only changes pixels
   that are *not* coloured; coloured pixels equal CLAM's).
7. ``custom_downsample > 1``: PIL resize to ``(int(w / cd), int(h / cd))`` (PIL default filter).

Memory is of the order of the output canvas (the slide is read only inside the ROI); the per-pixel
mean is computed on a compressed cell grid in row bands (see :mod:`vis_utils.raster`).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from wsi_core.errors import ConfigError, FeatureFileError
from wsi_core.levels import level_scale, resolve_level, roi_canvas, to_level_px
from wsi_core.slide import Slide
from wsi_core.tissue import TissueContours

from .percentiles import rank_percentiles
from .raster import (
    band_heights, build_cells, cell_means, cell_stats, colormap_lut, copy_masked, expand_cells, lut_indices,
    BAND_PIXELS, row_bands, tissue_mask,
)

__all__ = ["HeatmapStyle", "HeatmapPlan", "plan_heatmap", "render_heatmap", "read_canvas",
           "render_on_canvas", "blur_ksize", "ColourLayer", "colour_layer"]

CLAM_BLOCK = 1024          # CLAM block_blending's block size, canvas px
READ_THREADS = max(1, min(8, os.cpu_count() or 1))   # parallel slide-block decoders


@dataclass(frozen=True)
class HeatmapStyle:
    """How the scores are drawn (CLAM ``heatmap_arguments`` names).

    cmap: matplotlib colormap name.
    alpha: weight of the colour in the blend, 0-1 (1 = no blending).
    blur: Gaussian blur; overlap: patch overlap 0-1 of the score grid (sets the blur kernel only).
    binarize / binary_thresh: draw 1 for scores >= threshold (``binary_thresh < 0`` -> ``1 / N``);
        the threshold is on the 0-1 scale (percentile / 100).
    blank_canvas: white instead of the slide. use_holes: cut tissue holes out of the mask.
    segment: colour only inside the tissue contours.
    custom_downsample: shrink the output by this integer factor (PIL resize).

    Raises:
        ConfigError: alpha outside [0, 1], overlap outside [0, 1), custom_downsample < 1.
    """

    cmap: str = "jet"
    alpha: float = 0.4
    blur: bool = False
    overlap: float = 0.0
    binarize: bool = False
    binary_thresh: float = -1.0
    blank_canvas: bool = False
    use_holes: bool = True
    segment: bool = True
    custom_downsample: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ConfigError(f"heatmap_arguments.alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"patching_arguments.overlap must be in [0, 1), got {self.overlap}")
        if int(self.custom_downsample) < 1:
            raise ConfigError(
                f"heatmap_arguments.custom_downsample must be >= 1, got {self.custom_downsample}"
            )


def blur_ksize(patch_size_canvas: tuple[int, int], overlap: float) -> tuple[int, int]:
    """CLAM's blur kernel ``(kw, kh)``: ``int(patch * (1 - overlap)) * 2 + 1`` per axis."""
    k = (np.array(patch_size_canvas) * (1 - overlap)).astype(int) * 2 + 1
    return int(k[0]), int(k[1])


def read_canvas(slide: Slide, *, vis_level: int, top_left: tuple[int, int],
                region_size: tuple[int, int], block_size: int = CLAM_BLOCK) -> np.ndarray:
    """The slide region at ``vis_level`` assembled from CLAM ``block_blending``'s block reads.

    Block ``(i, j)`` covers canvas px ``[i * bw, (i + 1) * bw) x [j * bh, ...)`` (clipped;
    ``bw = min(block_size, w)``, ``bh`` likewise) and is read at level-0 location
    ``top_left + (i * bw * int(dsx), j * bh * int(dsy))`` - the integer part of the level
    downsample, as CLAM steps its blocks.

    Args:
        slide: a ``wsi_core.Slide``. vis_level: pyramid level. top_left: level-0 px ``(x, y)``.
        region_size: canvas ``(w, h)`` px at ``vis_level``.

    Returns:
        ``(h, w, 3)`` uint8 RGB.
    """
    w, h = (int(v) for v in region_size)
    dsx, dsy = slide.level_downsamples[vis_level]
    stepx, stepy = max(int(dsx), 1), max(int(dsy), 1)
    bw, bh = min(block_size, w), min(block_size, h)
    canvas = np.empty((h, w, 3), dtype=np.uint8)

    def read_block(xy: tuple[int, int]) -> None:
        x, y = xy
        x_end, y_end = min(w, x + bw), min(h, y + bh)
        loc = (int(top_left[0]) + (x // bw) * bw * stepx, int(top_left[1]) + (y // bh) * bh * stepy)
        canvas[y:y_end, x:x_end] = slide.read_region(loc, vis_level, (x_end - x, y_end - y))

    blocks = [(x, y) for x in range(0, w, max(bw, 1)) for y in range(0, h, max(bh, 1))]
    # OpenSlide is thread-safe and its decoders run outside the GIL: decode blocks in parallel.
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(blocks)) or 1) as pool:
        list(pool.map(read_block, blocks))
    return canvas


def render_on_canvas(canvas: np.ndarray, scores: np.ndarray, coords: np.ndarray, *,
                     patch_size: tuple[int, int], threshold: float, style: HeatmapStyle,
                     tissue: np.ndarray | None = None, inplace: bool = False) -> np.ndarray:
    """Colour and blend scores onto a canvas (steps 3-6 of the module docstring; no slide I/O).

    Args:
        canvas: ``(h, w, 3)`` uint8 base image, also the blend canvas.
        scores: ``(n,)`` float scores already on the 0-1 scale (percentile / 100).
        coords: ``(n, 2)`` int canvas px top-left ``(x, y)`` of each patch.
        patch_size: ``(pw, ph)`` canvas px.
        threshold: colour patches with ``score >= threshold`` (compared in ``scores``' dtype).
        style: only cmap, alpha, blur, overlap and binarize are used here.
        tissue: ``(h, w)`` bool mask or None (no segmentation).
        inplace: allowed to overwrite ``canvas`` (ignored with blur).

    Returns:
        ``(h, w, 3)`` uint8 RGB.
    """
    h, w = canvas.shape[:2]
    cells, lut = _cells(scores, coords, patch_size, (w, h), threshold, style)
    if style.blur:
        return _render_blur(canvas, cells, lut, blur_ksize(patch_size, style.overlap), style, tissue)
    out = canvas if inplace else canvas.copy()
    for a, b, x0, x1, colour, mask in _colour_bands(cells, lut, (w, h), style, tissue):
        _blend(colour, mask, out[a:b, x0:x1], style.alpha)
    return out


@dataclass(frozen=True)
class ColourLayer:
    """A heatmap's colours apart from its canvas: ``render_on_canvas(canvas, ...)`` (no blur) equals
    ``layer.blend(canvas)`` for every canvas of the layer's size, and any window of the canvas
    blends with the same window of the layer (each pixel depends only on itself).

    colour: ``(h, w, 3)`` uint8 RGB (0 where nothing is coloured). mask: ``(h, w)`` uint8 0/1,
    1 where a patch at or above the threshold covers the pixel (inside the tissue mask, if any).
    """

    colour: np.ndarray
    mask: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.colour.nbytes + self.mask.nbytes

    def blend(self, canvas: np.ndarray, alpha: float, top_left: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Blend the layer's window at ``top_left`` (layer px ``(x, y)``) of ``canvas``'s size onto
        ``canvas`` ``(h, w, 3)`` uint8, in place (returned)."""
        x, y = (int(v) for v in top_left)
        h, w = canvas.shape[:2]
        _blend(self.colour[y:y + h, x:x + w], self.mask[y:y + h, x:x + w], canvas, alpha)
        return canvas


def colour_layer(region_size: tuple[int, int], scores: np.ndarray, coords: np.ndarray, *,
                 patch_size: tuple[int, int], threshold: float, style: HeatmapStyle,
                 tissue: np.ndarray | None = None, band_pixels: int = BAND_PIXELS) -> ColourLayer:
    """The :class:`ColourLayer` of ``render_on_canvas`` on a ``region_size`` ``(w, h)`` canvas
    (arguments as there; ``style.alpha`` and ``blank_canvas`` do not matter). ``band_pixels``:
    pixels coloured per row band (smaller bands: fewer temporaries, more passes over the patches).

    Raises:
        ValueError: ``style.blur`` (the blur mixes the canvas into the colours: no layer exists).
    """
    if style.blur:
        raise ValueError("a blurred heatmap has no colour layer apart from its canvas; use render_on_canvas")
    w, h = (int(v) for v in region_size)
    colour, mask = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)
    cells, lut = _cells(scores, coords, patch_size, (w, h), threshold, style)
    for a, b, x0, x1, c, m in _colour_bands(cells, lut, (w, h), style, tissue, band_pixels):
        colour[a:b, x0:x1], mask[a:b, x0:x1] = c, m
    return ColourLayer(colour, mask)


def _cells(scores, coords, patch_size, size, threshold, style):
    scores = np.asarray(scores).reshape(-1)
    above = scores >= threshold
    values = np.where(above, 1.0 if style.binarize else scores.astype(np.float64), 0.0)
    coords = np.asarray(coords).reshape(-1, 2)
    return build_cells(coords[:, 0], coords[:, 1], patch_size, size, values, above), colormap_lut(style.cmap)


def _colour_bands(cells, lut: np.ndarray, size: tuple[int, int], style: HeatmapStyle, tissue: np.ndarray | None,
                  band_pixels: int = BAND_PIXELS):
    """Per row band ``[a, b)`` and its coloured columns ``[x0, x1)``: ``(a, b, x0, x1, colour
    (b - a, x1 - x0, 3) uint8, mask (b - a, x1 - x0) uint8 0/1)`` - steps 3 and 5 without blur."""
    w, h = size
    rgb_lut = lut.reshape(-1, 1, 3) if len(lut) == 256 else None
    for a, b in row_bands(h, w, band_pixels=band_pixels):
        ca, cb = cells.cell_rows(a, b)
        sums, counts, n_above = cell_stats(cells, ca, cb)
        coloured = n_above > 0
        cols = np.flatnonzero(coloured.any(axis=0))
        if cols.size == 0:
            continue
        k0, k1 = int(cols[0]), int(cols[-1]) + 1
        x0, x1 = int(cells.xs[k0]), int(cells.xs[k1])
        idx = lut_indices(cell_means(sums, counts, cells.bits, binarize=style.binarize), len(lut))
        heights, widths = band_heights(cells, ca, cb, a, b), cells.widths[k0:k1]
        mask = expand_cells(coloured[:, k0:k1].view(np.uint8), heights, widths)
        if tissue is not None:
            mask &= tissue[a:b, x0:x1].view(np.uint8)
        yield a, b, x0, x1, expand_cells(_colour_cells(idx[:, k0:k1], lut, rgb_lut), heights, widths), mask


def _blend(colour: np.ndarray, mask: np.ndarray, region: np.ndarray, alpha: float) -> None:
    """Step 6 on one window: ``region[mask] = addWeighted(colour, alpha, region, 1 - alpha)[mask]``."""
    if alpha < 1.0:
        colour = cv2.addWeighted(colour, alpha, region, 1.0 - alpha, 0)
    copy_masked(colour, mask, region)


def _colour_cells(idx: np.ndarray, lut: np.ndarray, rgb_lut: np.ndarray | None) -> np.ndarray:
    """``(..., 3)`` uint8 colours of LUT indices (cv2.LUT when the LUT has 256 entries)."""
    if rgb_lut is None or idx.size < 4096:
        return lut[idx]
    i8 = idx.astype(np.uint8)
    return cv2.LUT(cv2.merge([i8, i8, i8]), rgb_lut)


def _render_blur(canvas: np.ndarray, cells, lut: np.ndarray, ksize: tuple[int, int],
                 style: HeatmapStyle, tissue: np.ndarray | None) -> np.ndarray:
    """Blur path: every output row needs ``ksize[1] // 2`` rows of blurred colour around it, which
    need as many rows of blurred scores again, so each band is computed with a 2x halo."""
    h, w = canvas.shape[:2]
    r = ksize[1] // 2
    out = np.empty_like(canvas)
    rgb_lut = lut.reshape(-1, 1, 3) if len(lut) == 256 else None
    for a, b in row_bands(h, w, min_rows=2 * r):
        ia, ib = max(0, a - r), min(h, b + r)
        oa, ob = max(0, a - 2 * r), min(h, b + 2 * r)
        ca, cb = cells.cell_rows(oa, ob)
        sums, counts, n_above = cell_stats(cells, ca, cb)
        means = cell_means(sums, counts, cells.bits, binarize=style.binarize)
        overlay = expand_cells(means, band_heights(cells, ca, cb, oa, ob), cells.widths)
        overlay = cv2.GaussianBlur(overlay, ksize, 0)[ia - oa:ib - oa]
        mask = expand_cells((n_above > 0).view(np.uint8), band_heights(cells, ca, cb, ia, ib),
                            cells.widths)
        if tissue is not None:
            mask &= tissue[ia:ib].view(np.uint8)
        img = canvas[ia:ib].copy()
        copy_masked(_colour_cells(lut_indices(overlay, len(lut)), lut, rgb_lut), mask, img)
        img = cv2.GaussianBlur(img, ksize, 0)[a - ia:b - ia]
        if style.alpha < 1.0:
            img = cv2.addWeighted(img, style.alpha, canvas[a:b], 1.0 - style.alpha, 0)
        out[a:b] = img
    return out


def _flat_scores(scores, coords, slide_id: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores)
    s = s.reshape(-1) if s.ndim == 2 else s
    c = np.asarray(coords)
    if s.ndim != 1 or c.ndim != 2 or c.shape[1] != 2 or len(s) != len(c):
        raise FeatureFileError(
            f"{slide_id}: scores {s.shape} and coords {c.shape} do not match; expected (N,) or "
            "(N, 1) scores and (N, 2) level-0 coords of the same N"
        )
    if s.dtype.kind not in "biuf" or not np.all(np.isfinite(s)):
        raise FeatureFileError(f"{slide_id}: attention scores contain NaN/Inf or are not numeric")
    return (s if s.dtype.kind == "f" else s.astype(np.float64)), c


@dataclass(frozen=True)
class HeatmapPlan:
    """What :func:`render_heatmap` settles before it touches pixels (module steps 1-3).

    vis_level: resolved pyramid level. scale: ``(2,)`` float64 ``(1 / dsx, 1 / dsy)``.
    top_left: level-0 px ``(x, y)`` of the canvas origin (ROI top-left, else ``(0, 0)``).
    region_size: canvas ``(w, h)`` px at ``vis_level`` (before ``custom_downsample``).
    scores: ``(n,)`` float scores on the 0-1 scale (percentile / 100), after the ROI screen.
    coords: ``(n, 2)`` int64 canvas px top-left ``(x, y)``. patch_size: ``(pw, ph)`` canvas px.
    threshold: colour patches with ``score >= threshold`` (0-1 scale).
    """

    vis_level: int
    scale: np.ndarray
    top_left: tuple[int, int]
    region_size: tuple[int, int]
    scores: np.ndarray
    coords: np.ndarray
    patch_size: tuple[int, int]
    threshold: float


def plan_heatmap(slide: Slide, scores: np.ndarray, coords: np.ndarray, *, patch_size_level0: tuple[int, int],
                 vis_level: int,
                 style: HeatmapStyle, convert_to_percentiles: bool,
                 roi: tuple[int, int, int, int] | None = None) -> HeatmapPlan:
    """Resolve the level, ROI, canvas geometry, percentiles and threshold of a heatmap exactly as
    :func:`render_heatmap` does (percentiles are computed once, over all kept scores), so other
    renderers (the banded TIFF writer) draw the same pixels. Arguments and errors as
    :func:`render_heatmap`."""
    vis_level = resolve_level(slide, vis_level)
    scale = level_scale(slide, vis_level)
    scores, coords = _flat_scores(scores, coords, slide.slide_id)
    threshold = 0.0
    if style.binarize:
        threshold = 1.0 / max(len(scores), 1) if style.binary_thresh < 0 else float(style.binary_thresh)
    top_left, bot_right, region_size = roi_canvas(slide, roi, scale, vis_level)
    if roi is not None:
        keep = np.all(coords >= np.array(top_left), axis=1) & np.all(coords <= np.array(bot_right), axis=1)
        scores, coords = scores[keep], coords[keep] - np.array(top_left)
    patch_size = tuple(int(v) for v in to_level_px(patch_size_level0, scale))
    coords = to_level_px(coords, scale)
    if convert_to_percentiles:
        scores = rank_percentiles(scores)
    scores = scores / 100
    return HeatmapPlan(vis_level=int(vis_level), scale=scale, top_left=tuple(top_left),
                       region_size=tuple(region_size), scores=scores, coords=coords,
                       patch_size=patch_size, threshold=threshold)


def render_heatmap(slide: Slide, scores: np.ndarray, coords: np.ndarray, *, patch_size_level0: tuple[int, int],
                   vis_level: int,
                   contours: TissueContours | None, style: HeatmapStyle, convert_to_percentiles: bool,
                   roi: tuple[int, int, int, int] | None = None, canvas: np.ndarray | None = None) -> np.ndarray:
    """Draw an attention heatmap of a slide like CLAM ``drawHeatmap`` (see the module docstring).

    Args:
        slide: an open ``wsi_core.Slide``.
        scores: ``(N,)`` or ``(N, 1)`` attention scores (percentiles 0-100, or raw scores with
            ``convert_to_percentiles``).
        coords: ``(N, 2)`` int level-0 px top-left ``(x, y)`` of each patch.
        patch_size_level0: ``(w, h)`` level-0 px of one patch.
        vis_level: pyramid level of the canvas; ``< 0`` -> best level for downsample 32.
        contours: ``TissueContours`` (level-0 px) for the tissue mask, or None to colour every
            covered pixel (as ``segment=False``).
        style: :class:`HeatmapStyle`.
        convert_to_percentiles: rank-percentile the scores (after the ROI screen) first.
        roi: ``(x1, y1, x2, y2)`` level-0 px, or None for the whole slide.
        canvas: the slide at ``vis_level`` already read by the caller (``(h, w, 3)`` uint8 of the
            canvas: the whole level without an ROI), used instead of reading it again; it must hold
            the pixels :func:`read_canvas` gives (so: an integer level downsample, where they equal
            one ``read_region``). Not modified.

    Returns:
        ``(h, w, 3)`` uint8 RGB, ``h, w`` = the level (or ROI) size at ``vis_level``, divided by
        ``custom_downsample``.

    Raises:
        ConfigError: ``vis_level`` is not a level of the slide.
        FeatureFileError: scores/coords shapes do not match, or NaN/Inf scores.
        RoiError: the ROI is empty or outside the slide.
        ConfigError (from the colormap): unknown ``style.cmap``.
    """
    plan = plan_heatmap(slide, scores, coords, patch_size_level0=patch_size_level0,
                        vis_level=vis_level, style=style,
                        convert_to_percentiles=convert_to_percentiles, roi=roi)
    vis_level, scale, top_left, region_size = (plan.vis_level, plan.scale, plan.top_left,
                                               plan.region_size)
    scores, coords, patch_size, threshold = (plan.scores, plan.coords, plan.patch_size,
                                             plan.threshold)
    tissue = None
    if style.segment and contours is not None:
        tissue = tissue_mask(contours, region_size=region_size, scale=(scale[0], scale[1]),
                             top_left=top_left, use_holes=style.use_holes)
    w, h = region_size
    if canvas is not None and not style.blank_canvas:
        if canvas.shape != (h, w, 3) or canvas.dtype != np.uint8:
            raise ValueError(f"canvas {canvas.shape} {canvas.dtype} is not the ({h}, {w}, 3) uint8 slide at vis_level {vis_level}")
        canvas = canvas.copy()
    elif style.blank_canvas:
        canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    elif style.alpha < 1.0:
        canvas = read_canvas(slide, vis_level=vis_level, top_left=top_left, region_size=region_size)
    else:
        canvas = slide.read_region(top_left, vis_level, region_size)
    out = render_on_canvas(canvas, scores, coords, patch_size=patch_size, threshold=threshold,
                           style=style, tissue=tissue, inplace=True)
    if style.custom_downsample > 1:
        cd = int(style.custom_downsample)
        out = np.asarray(Image.fromarray(out).resize((int(w / cd), int(h / cd))))
    return out
