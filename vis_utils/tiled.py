"""Full-resolution heatmaps as pyramidal TIFFs, rendered band by band in bounded memory.

:func:`render_heatmap_tiff` draws the same pixels as :func:`vis_utils.heatmap.render_heatmap`
for the same arguments, one horizontal band of the ``vis_level`` canvas at a time, and streams the
bands into :func:`vis_utils.tiff.write_pyramidal_tiff`. How each band stays exact:

* geometry, ROI screen, percentiles (once, over all kept scores) and threshold come from
  :func:`vis_utils.heatmap.plan_heatmap`, shared with ``render_heatmap``;
* every patch overlapping a band is drawn into it (clipped at the band edges), so the per-pixel
  mean over overlapping patches is the same across band borders;
* the tissue mask of a band is the full mask's rows: the same scaled contours, drawn with the
  offset moved up by the band's first row;
* the base image comes from the same CLAM 1024-px block reads as :func:`read_canvas` (bands read
  whole block rows and keep the last one for the next band); with ``alpha == 1`` it is read per
  band with ``read_region`` (exact at level 0 and integer level downsamples; at a non-integer
  downsample the uncoloured pixels of later bands may differ by OpenSlide's sub-pixel shift);
* with ``blur`` each band is rendered with a halo of ``2 * (ksize // 2)`` rows, which makes it
  exact (the blur needs ``ksize // 2`` rows of blurred scores around each blurred colour row).

``custom_downsample > 1`` is refused (the pyramid already holds the downsampled levels).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np

from wsi_core.errors import ConfigError
from wsi_core.slide import Slide
from wsi_core.tissue import TissueContours

from .heatmap import CLAM_BLOCK, HeatmapPlan, HeatmapStyle, blur_ksize, plan_heatmap, read_canvas, \
    render_on_canvas
from .raster import band_heights, build_cells, cell_means, cell_stats, expand_cells
from .tiff import write_pyramidal_tiff

__all__ = ["TiffHeatmap", "render_heatmap_tiff", "band_tissue_mask", "scaled_contours", "contour_edge_rows", "TissueWindows",
           "band_renderer", "score_band_renderer", "content_tile_grid", "sparse_band_renderer"]

BAND_TARGET_PX = 1 << 25        # ~32 Mpx (96 MiB RGB) per band; at least one 1024-row block row


class TiffHeatmap(NamedTuple):
    """Paths written by :func:`render_heatmap_tiff` (``scores`` is None without raw scores)."""

    heatmap: Path
    scores: Path | None


MASK_EDGE_ROWS = 2048      # contour edges are followed this far past a band border (see below)
WINDOW_BLOCKS = 8          # sparse rendering: at most this many CLAM blocks per window (memory)


def scaled_contours(contours, scale: np.ndarray, use_holes: bool) -> list:
    """``[(tissue (K,1,2) int32, holes)]`` scaled to the canvas, largest first (as tissue_mask)."""
    sc = np.array([float(scale[0]), float(scale[1])])
    tissue = [np.array(c * sc, dtype=np.int32) for c in contours.tissue]
    holes = [[np.array(hc * sc, dtype=np.int32) for hc in hs] for hs in contours.holes]
    holes += [[] for _ in range(len(tissue) - len(holes))]
    pairs = sorted(zip(tissue, holes), key=lambda p: cv2.contourArea(p[0]), reverse=True)
    return [(t, hs if use_holes else []) for t, hs in pairs]


def contour_edge_rows(scaled: list, oy: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ylo, yhi)`` canvas rows spanned by every polygon edge (closing edges included)."""
    polys = [p for t, hs in scaled for p in [t, *hs]]
    if not polys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    y = [p.reshape(-1, 2)[:, 1].astype(np.int64) + oy for p in polys]
    y_next = [np.roll(v, -1) for v in y]
    lo = np.concatenate([np.minimum(a, b) for a, b in zip(y, y_next)])
    hi = np.concatenate([np.maximum(a, b) for a, b in zip(y, y_next)])
    return lo, hi


def band_tissue_mask(scaled: list, *, top_left: tuple[int, int], scale: np.ndarray, width: int,
                     rows: tuple[int, int], height: int,
                     edge_rows: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Rows ``[a, b)`` of ``raster.tissue_mask`` on a ``(height, width)`` canvas.

    OpenCV clips polygon edges at the image border and re-derives them from the clipped ends,
    so a polygon drawn on a band differs from the full drawing near the band's borders. Here the
    band is drawn on rows ``[y0, y1)`` that contain both ends of every edge crossing it (or the
    canvas border, where the full drawing clips too), then cut - exact, unless an edge runs more
    than ``MASK_EDGE_ROWS`` rows past the band (then it is clipped there; never for contours
    from ``segment_tissue``, whose edges are one segmentation pixel long).

    Args:
        scaled: output of :func:`scaled_contours` (canvas-scaled, sorted contours).
        top_left: level-0 px origin of the canvas. scale: ``(1 / dsx, 1 / dsy)``.
        width, height: canvas size, px. rows: ``(a, b)`` canvas rows.
        edge_rows: :func:`contour_edge_rows` of ``scaled`` (computed when None).

    Returns:
        ``(b - a, width)`` bool.
    """
    a, b = (int(v) for v in rows)
    sc = np.array([float(scale[0]), float(scale[1])])
    ox, oy = (int(v) for v in (np.array(top_left) * sc * -1).astype(np.int32))
    lo, hi = edge_rows if edge_rows is not None else contour_edge_rows(scaled, oy)
    cross = (lo < b) & (hi >= a)
    y0 = max(0, a - MASK_EDGE_ROWS, min(a, int(lo[cross].min(initial=a))))
    y1 = min(int(height), b + MASK_EDGE_ROWS, max(b, int(hi[cross].max(initial=b - 1)) + 1))
    offset = (ox, oy - y0)
    mask = np.zeros((y1 - y0, int(width)), dtype=np.uint8)
    for cont, holes in scaled:
        cv2.drawContours(mask, [cont], -1, 1, thickness=-1, offset=offset)
        if holes:
            cv2.drawContours(mask, holes, -1, 0, thickness=-1, offset=offset)
    return mask[a - y0:b - y0].view(bool)     # 0/1 uint8 -> bool without a copy


class TissueWindows:
    """Windows of ``raster.tissue_mask`` (canvas origin at level-0 ``(0, 0)``) drawn without the
    whole canvas - for tiles of a large canvas.

    A window is drawn on itself plus a margin of the longest contour edge (so every edge that
    meets the window is drawn whole, as on the full canvas, where OpenCV's border clipping would
    otherwise move it), clipped to the canvas like the full drawing, with only the contours whose
    bounding box meets it, in ``tissue_mask``'s order. The margin is capped at
    ``MASK_EDGE_ROWS`` px: an edge longer than that (never one from ``segment_tissue``) may be
    drawn a pixel off near a window border.

    Args:
        contours: ``TissueContours`` (level-0 px). scale: ``(1 / dsx, 1 / dsy)`` level-0 -> canvas.
        canvas_size: ``(w, h)`` px. use_holes: clear each contour's holes.
    """

    def __init__(self, contours, scale: tuple[float, float], canvas_size: tuple[int, int], *,
                 use_holes: bool = True) -> None:
        self.scaled = scaled_contours(contours, np.asarray(scale, dtype=np.float64), use_holes)
        self.size = tuple(int(v) for v in canvas_size)
        boxes, edge = [], 0
        for tissue, holes in self.scaled:
            pts = tissue.reshape(-1, 2)
            boxes.append((*pts.min(axis=0), *(pts.max(axis=0) + 1)))
            for poly in [tissue, *holes]:
                p = poly.reshape(-1, 2).astype(np.int64)
                if len(p) > 1:
                    edge = max(edge, int(np.abs(p - np.roll(p, -1, axis=0)).max()))
        self.boxes = np.array(boxes, dtype=np.int64).reshape(-1, 4)
        self.margin = min(edge + 2, MASK_EDGE_ROWS)

    def mask(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """``(y1 - y0, x1 - x0)`` bool: canvas px ``box`` ``(x0, y0, x1, y1)`` of the tissue mask."""
        x0, y0, x1, y1 = (int(v) for v in box)
        m, (w, h) = self.margin, self.size
        wx0, wy0, wx1, wy1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
        b = self.boxes
        meets = (b[:, 0] < wx1) & (b[:, 2] > wx0) & (b[:, 1] < wy1) & (b[:, 3] > wy0) if len(b) else []
        out = np.zeros((max(wy1 - wy0, 0), max(wx1 - wx0, 0)), dtype=np.uint8)
        for i in np.flatnonzero(meets):
            tissue, holes = self.scaled[i]
            cv2.drawContours(out, [tissue], -1, 1, thickness=-1, offset=(-wx0, -wy0))
            if holes:
                cv2.drawContours(out, holes, -1, 0, thickness=-1, offset=(-wx0, -wy0))
        return out[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0].astype(bool)


class _BaseReader:
    """Base image rows of the canvas, as render_heatmap builds it (see module docstring)."""

    def __init__(self, slide, plan: HeatmapPlan, style: HeatmapStyle) -> None:
        self.slide, self.plan, self.style = slide, plan, style
        self.w, self.h = plan.region_size
        self.block = min(CLAM_BLOCK, self.h)
        self.cache: tuple[int, int, np.ndarray] | None = None
        # at an integer level downsample (level 0 above all) CLAM's block reads land on the level's
        # own pixel grid, so any window of the canvas may be read directly, with the same pixels
        dsx, dsy = slide.level_downsamples[plan.vis_level]
        self.integer_downsample = float(dsx).is_integer() and float(dsy).is_integer()

    def rows(self, a: int, b: int, *, next_start: int | None = None) -> np.ndarray:
        """Canvas rows ``[a, b)`` ``(b - a, w, 3)`` uint8 (a fresh array the caller may modify).
        ``next_start``: the first row the next call will ask for (its block row is kept)."""
        w, (tx, ty) = self.w, self.plan.top_left
        if self.style.blank_canvas:
            return np.full((b - a, w, 3), 255, dtype=np.uint8)
        dsx, dsy = self.slide.level_downsamples[self.plan.vis_level]
        if self.style.alpha >= 1.0:
            return self.slide.read_region((tx, ty + int(round(a * dsy))), self.plan.vis_level,
                                          (w, b - a))
        a0 = a // self.block * self.block
        b0 = min(self.h, -(-b // self.block) * self.block)
        parts, start = [], a0
        if self.cache is not None and self.cache[0] <= a0 < self.cache[1]:
            parts.append(self.cache[2][a0 - self.cache[0]:])
            start = self.cache[1]
        if start < b0:
            stepy = max(int(dsy), 1)
            parts.append(read_canvas(self.slide, vis_level=self.plan.vis_level,
                                     top_left=(tx, ty + start * stepy),
                                     region_size=(w, b0 - start)))
        chunk = np.concatenate(parts) if len(parts) > 1 else parts[0]
        b0 = a0 + len(chunk)
        keep = b0 if next_start is None else max(a0, next_start // self.block * self.block)
        self.cache = (keep, b0, chunk[keep - a0:].copy()) if keep < b0 else None
        return chunk[a - a0:b - a0]

    def window(self, a: int, b: int, x0: int, x1: int) -> np.ndarray:
        """Canvas rows ``[a, b)`` x columns ``[x0, x1)`` ``(b - a, x1 - x0, 3)`` uint8 (a fresh
        array): the same pixels as :meth:`rows` there, from the CLAM blocks that hold them (no
        cache: a window's block rows are read once per call), or - at an integer level
        downsample, where they are the same - from the window alone."""
        w, (tx, ty) = self.w, self.plan.top_left
        if self.style.blank_canvas:
            return np.full((b - a, x1 - x0, 3), 255, dtype=np.uint8)
        dsx, dsy = self.slide.level_downsamples[self.plan.vis_level]
        if self.style.alpha >= 1.0:
            return self.slide.read_region((tx + int(round(x0 * dsx)), ty + int(round(a * dsy))),
                                          self.plan.vis_level, (x1 - x0, b - a))
        bw = min(CLAM_BLOCK, w)
        a0, b0 = a // self.block * self.block, min(self.h, -(-b // self.block) * self.block)
        c0, c1 = x0 // bw * bw, min(w, -(-x1 // bw) * bw)
        if self.integer_downsample:      # every block read gives the same pixels: read the window alone
            a0, b0, c0, c1 = a, b, x0, x1
        stepx, stepy = max(int(dsx), 1), max(int(dsy), 1)
        chunk = read_canvas(self.slide, vis_level=self.plan.vis_level,
                            top_left=(tx + c0 * stepx, ty + a0 * stepy), region_size=(c1 - c0, b0 - a0))
        return chunk[a - a0:b - a0, x0 - c0:x1 - c0]


def band_renderer(slide: Slide, plan: HeatmapPlan, contours: TissueContours | None,
                  style: HeatmapStyle) -> Callable[[int, int], np.ndarray]:
    """``render_band(a, b) -> (b - a, w, 3)`` uint8 rows of the heatmap canvas."""
    w, h = plan.region_size
    ph = plan.patch_size[1]
    halo = 2 * (blur_ksize(plan.patch_size, style.overlap)[1] // 2) if style.blur else 0
    scaled = edges = None
    if style.segment and contours is not None:
        scaled = scaled_contours(contours, plan.scale, style.use_holes)
        oy = int(np.int32(-plan.top_left[1] * plan.scale[1]))
        edges = contour_edge_rows(scaled, oy)
    base = _BaseReader(slide, plan, style)
    ys = plan.coords[:, 1]

    def render_band(a: int, b: int) -> np.ndarray:
        ra, rb = max(0, a - halo), min(h, b + halo)
        canvas = base.rows(ra, rb, next_start=max(0, b - halo))
        if not canvas.flags.writeable:
            canvas = canvas.copy()
        sel = (ys < rb) & (ys + ph > ra)
        tissue = None
        if scaled is not None:
            tissue = band_tissue_mask(scaled, top_left=plan.top_left, scale=plan.scale, width=w,
                                      rows=(ra, rb), height=h, edge_rows=edges)
        out = render_on_canvas(canvas, plan.scores[sel], plan.coords[sel] - np.array([0, ra]),
                               patch_size=plan.patch_size, threshold=plan.threshold, style=style,
                               tissue=tissue, inplace=True)
        return out[a - ra:b - ra]

    return render_band


def content_tile_grid(plan: HeatmapPlan, contours: TissueContours | None, style: HeatmapStyle, *,
                      tile: int, origin: tuple[int, int] = (0, 0),
                      canvas: tuple[int, int] | None = None) -> np.ndarray:
    """The tiles that may hold heatmap colour: ``(ceil(H / tile), ceil(W / tile))`` bool over the
    output image ``canvas`` ``(W, H)`` px (default: the plan's canvas), in which the plan's canvas
    sits at ``origin`` (an ROI's place in the level; default ``(0, 0)``).

    A pixel is coloured only under a patch with ``score >= threshold`` and, with ``segment``,
    inside the tissue contours (module docstring of :mod:`vis_utils.heatmap`), so a tile is marked
    when such a patch overlaps it and a tissue contour (filled, outline included, one tile of
    margin; holes ignored) reaches it; with ``blur`` the patches and the contours reach
    ``2 * (ksize // 2)`` px further (the blurred colour spreads). Conservative: every tile with a coloured pixel is
    marked; a marked tile may have none.

    Args:
        plan: the heatmap's :class:`HeatmapPlan` (canvas px coords and patch size).
        contours: the tissue contours (level-0 px) or None. style: the rendering style.
        tile: tile side, canvas px. origin, canvas: see above.
    """
    rw, rh = plan.region_size
    ox, oy = (int(v) for v in origin)
    w, h = (int(v) for v in (canvas or (rw, rh)))
    ntx, nty = -(-w // tile), -(-h // tile)
    halo = 2 * (blur_ksize(plan.patch_size, style.overlap)[0] // 2) if style.blur else 0
    haloy = 2 * (blur_ksize(plan.patch_size, style.overlap)[1] // 2) if style.blur else 0
    c = plan.coords[plan.scores >= plan.threshold].astype(np.int64)
    pw, ph = plan.patch_size
    # a patch colours plan-canvas px [c, c + p) (clipped to the plan's canvas), here moved by origin
    x0, x1 = np.clip(c[:, 0] - halo, 0, rw) + ox, np.clip(c[:, 0] + pw + halo, 0, rw) + ox
    y0, y1 = np.clip(c[:, 1] - haloy, 0, rh) + oy, np.clip(c[:, 1] + ph + haloy, 0, rh) + oy
    x0, x1, y0, y1 = np.clip(x0, 0, w), np.clip(x1, 0, w), np.clip(y0, 0, h), np.clip(y1, 0, h)
    ok = (x1 > x0) & (y1 > y0)
    diff = np.zeros((nty + 1, ntx + 1), np.int64)       # 2-D difference array over tiles
    tx0, tx1 = x0[ok] // tile, (x1[ok] - 1) // tile + 1
    ty0, ty1 = y0[ok] // tile, (y1[ok] - 1) // tile + 1
    for yy, xx, v in ((ty0, tx0, 1), (ty0, tx1, -1), (ty1, tx0, -1), (ty1, tx1, 1)):
        np.add.at(diff, (yy, xx), v)
    grid = diff.cumsum(0).cumsum(1)[:nty, :ntx] > 0
    if style.segment and contours is not None:
        tissue = np.zeros((nty, ntx), np.uint8)
        sc = plan.scale / tile
        shift = (np.array(plan.top_left, np.float64) * plan.scale - np.array([ox, oy])) / tile
        polys = [np.round(np.asarray(t, np.float64).reshape(-1, 2) * sc - shift).astype(np.int32)
                 for t in contours.tissue]
        if polys:
            cv2.fillPoly(tissue, polys, 1)
            cv2.polylines(tissue, polys, True, 1, thickness=1)
            m = 1 + -(-max(halo, haloy) // tile)         # one tile, plus the blur's reach
            tissue = cv2.dilate(tissue, np.ones((2 * m + 1, 2 * m + 1), np.uint8))
        grid &= tissue.view(bool)
    return grid


def sparse_band_renderer(slide: Slide, plan: HeatmapPlan, contours: TissueContours | None,
                         style: HeatmapStyle, grid: np.ndarray, *, tile: int,
                         origin: tuple[int, int] = (0, 0)) -> Callable[[int, int], np.ndarray | None]:
    """``render_band(a, b)`` like :func:`band_renderer`, but only where ``grid`` marks tiles
    (``grid``: tiles of the output image in which the plan's canvas sits at ``origin``, as
    :func:`content_tile_grid` gives them).

    The marked tile columns of the band's tile rows - widened to CLAM's 1024-px blocks unless the
    level downsample is an integer (level 0), in windows of at most ``WINDOW_BLOCKS`` blocks - over
    the band's rows of marked tiles, are read from the slide and rendered (each
    window with the blur halo on every side, so its pixels equal :func:`band_renderer`'s); the rest
    of the band is white and never read. A band without marked
    tiles is None. With :func:`content_tile_grid` as ``grid`` and ``write_pyramidal_tiff(...,
    content_tiles=grid)``, the written tiles hold exactly :func:`band_renderer`'s pixels.
    """
    w, h = plan.region_size
    pw, ph = plan.patch_size
    halo = 2 * (blur_ksize(plan.patch_size, style.overlap)[1] // 2) if style.blur else 0
    halox = 2 * (blur_ksize(plan.patch_size, style.overlap)[0] // 2) if style.blur else 0
    scaled = edges = None
    if style.segment and contours is not None:
        scaled = scaled_contours(contours, plan.scale, style.use_holes)
        edges = contour_edge_rows(scaled, int(np.int32(-plan.top_left[1] * plan.scale[1])))
    base = _BaseReader(slide, plan, style)
    xs, ys = plan.coords[:, 0], plan.coords[:, 1]
    block = min(CLAM_BLOCK, w)
    nblocks = -(-w // block)
    ox, oy = (int(v) for v in origin)

    def render_band(a: int, b: int) -> np.ndarray | None:
        ty0, ty1 = max(0, (a + oy) // tile), max(0, -(-(b + oy) // tile))
        k = np.flatnonzero(grid[ty0:ty1].any(axis=0))
        # marked output tiles -> plan-canvas px -> runs of whole CLAM blocks (one read per block)
        c0, c1 = np.maximum(k * tile - ox, 0), np.minimum((k + 1) * tile - ox, w)
        k, c0, c1 = k[c1 > c0], c0[c1 > c0], c1[c1 > c0]
        if not len(k):
            return None
        d = np.zeros(nblocks + 1, np.int64)
        np.add.at(d, c0 // block, 1)
        np.add.at(d, (c1 - 1) // block + 1, -1)
        per_block = (np.cumsum(d)[:nblocks] > 0).astype(np.int8)
        edges_ = np.flatnonzero(np.diff(np.concatenate(([0], per_block, [0]))))
        runs = [(k * block, min(k + WINDOW_BLOCKS, e) * block) for b_, e in zip(edges_[::2], edges_[1::2])
                for k in range(int(b_), int(e), WINDOW_BLOCKS)]       # windows of bounded width
        if base.integer_downsample:      # no block alignment needed: the marked tiles' columns only
            starts = np.concatenate(([True], c0[1:] != c1[:-1]))
            ends = np.concatenate((c0[1:] != c1[:-1], [True]))
            runs = [(int(x), min(int(x) + WINDOW_BLOCKS * block, int(e)))
                    for s_, e in zip(c0[starts], c1[ends])
                    for x in range(int(s_), int(e), WINDOW_BLOCKS * block)]
        out = np.full((b - a, w, 3), 255, np.uint8)
        ra, rb = max(0, a - halo), min(h, b + halo)
        tissue = None
        if scaled is not None:
            tissue = band_tissue_mask(scaled, top_left=plan.top_left, scale=plan.scale, width=w,
                                      rows=(ra, rb), height=h, edge_rows=edges)
        rows_sel = (ys < rb) & (ys + ph > ra)
        for xa, xb in runs:
            xb = min(w, xb)
            # the band's rows with marked tiles under these columns
            marked = np.flatnonzero(grid[ty0:ty1, (xa + ox) // tile:(xb - 1 + ox) // tile + 1].any(axis=1))
            ya = max(a, (ty0 + int(marked[0])) * tile - oy)
            yb = min(b, (ty0 + int(marked[-1]) + 1) * tile - oy)
            wa, wb = max(0, xa - halox), min(w, xb + halox)
            va, vb = max(0, ya - halo), min(h, yb + halo)
            sel = rows_sel & (ys < vb) & (ys + ph > va) & (xs < wb) & (xs + pw > wa)
            canvas = base.window(va, vb, wa, wb)
            if not canvas.flags.writeable:
                canvas = canvas.copy()
            img = render_on_canvas(canvas, plan.scores[sel], plan.coords[sel] - np.array([wa, va]),
                                   patch_size=plan.patch_size, threshold=plan.threshold, style=style,
                                   tissue=None if tissue is None else tissue[va - ra:vb - ra, wa:wb], inplace=True)
            out[ya - a:yb - a, xa:xb] = img[ya - va:yb - va, xa - wa:xb - wa]
        return out

    return render_band


def score_band_renderer(plan: HeatmapPlan, style: HeatmapStyle
                         ) -> Callable[[int, int], np.ndarray]:
    """``render_band(a, b) -> (b - a, w)`` uint8: round(255 * clip(mean value, 0, 1))."""
    w, h = plan.region_size
    scores = plan.scores
    above = scores >= plan.threshold
    values = np.where(above, 1.0 if style.binarize else scores.astype(np.float64), 0.0)
    cells = build_cells(plan.coords[:, 0], plan.coords[:, 1], plan.patch_size, (w, h), values,
                        above)

    def render_band(a: int, b: int) -> np.ndarray:
        ca, cb = cells.cell_rows(a, b)
        sums, counts, _ = cell_stats(cells, ca, cb)
        mean = cell_means(sums, counts, cells.bits, binarize=style.binarize)
        u8 = np.rint(np.clip(mean, 0.0, 1.0) * 255).astype(np.uint8)
        return expand_cells(u8, band_heights(cells, ca, cb, a, b), cells.widths)

    return render_band


def _in_slide_geometry(render: Callable[[int, int], np.ndarray], *, origin: tuple[int, int],
                       size: tuple[int, int], canvas: tuple[int, int], fill: int | tuple[int, int, int]
                       ) -> tuple[Callable[[int, int], np.ndarray | None], tuple[int, int, int, int]]:
    """Place an ROI canvas renderer (rows of ``size`` px) at ``origin`` in a ``canvas``-sized one.

    Returns the canvas band renderer (None for bands wholly outside the ROI; ``fill`` around the
    ROI elsewhere) and the ROI's ``(x0, y0, x1, y1)`` box in canvas px (clipped to the canvas).
    """
    (ox, oy), (rw, rh), (cw, ch) = origin, size, canvas
    x0, x1 = max(ox, 0), min(ox + rw, cw)
    y0, y1 = max(oy, 0), min(oy + rh, ch)
    pixel = np.atleast_1d(np.asarray(fill, dtype=np.uint8))

    def render_band(a: int, b: int) -> np.ndarray | None:
        lo, hi = max(a, y0), min(b, y1)
        if lo >= hi:
            return None
        part = render(lo - oy, hi - oy)
        if part is None:           # a sparse renderer's band without content
            return None
        out = np.empty((b - a, cw, len(pixel)), np.uint8)
        out[:] = pixel
        out[lo - a:hi - a, x0:x1] = part.reshape(hi - lo, rw, -1)[:, x0 - ox:x1 - ox]
        return out if part.ndim == 3 else out[:, :, 0]

    return render_band, (x0, y0, x1, y1)


def render_heatmap_tiff(slide: Slide, scores: np.ndarray, coords: np.ndarray, *,
                        patch_size_level0: tuple[int, int],
                        vis_level: int, contours: TissueContours | None, style: HeatmapStyle,
                        convert_to_percentiles: bool, out_path: str | os.PathLike[str],
                        roi: tuple[int, int, int, int] | None = None,
                        raw_scores: str | os.PathLike[str] | None = None,
                        compression: str = "jpeg", quality: int = 90, tile_size: int = 256,
                        band_rows: int | None = None, min_size: int = 1024,
                        empty_background: bool = False) -> TiffHeatmap:
    """Render a CLAM-semantics heatmap at ``vis_level`` (0 = full resolution) into a pyramidal TIFF.

    The pixels are those of :func:`vis_utils.heatmap.render_heatmap` with the same arguments (see
    the module docstring for the one exception). The TIFF's level 0 is the whole ``vis_level``
    level of the slide (its geometry, so the TIFF overlays the slide in a viewer); its mpp is the
    slide's level-0 mpp times the ``vis_level`` downsample (per axis); ImageDescription names the
    slide, level and level-0 origin (and the ROI).

    With an ``roi`` the ROI's heatmap (``render_heatmap``'s ROI image, ``int(x2 * s) - int(x1 * s)``
    px wide) sits at ``(int(x1 * s), int(y1 * s))`` of the level (``s`` = 1 / level downsample;
    clipped to the level), the tiles of every pyramid level wholly outside it are written empty
    (TileByteCounts 0: OpenSlide >= 4 reads them transparent, alpha 0) and the pixels of partly
    covered tiles outside it are white (0 in the raw score map).

    Args:
        slide, scores, coords, patch_size_level0, vis_level, contours, style,
            convert_to_percentiles, roi: as :func:`render_heatmap`.
        out_path: output ``.tif``/``.tiff`` (written atomically).
        raw_scores: a path: also write the raw score map there - a single-channel uint8 pyramidal
            TIFF (lossless deflate) whose value is ``round(255 * clip(v, 0, 1))`` of the per-pixel
            mean ``v`` that the colour map sees (0-1 scale = percentile / 100; 0/255 when
            binarizing; 0 where no patch covers the pixel; not blurred, not masked by tissue).
            The output layout (``heatmaps.layout.scores_tiff_path``) names it.
        compression, quality, tile_size, min_size: see :func:`write_pyramidal_tiff`
            (``compression='deflate'`` gives a lossless heatmap).
        band_rows: canvas rows per band; default: ~32 Mpx, a multiple of 1024 rows.
        empty_background: write the heatmap's tiles that hold no heatmap colour
            (:func:`content_tile_grid`: no patch with ``score >= threshold`` and, with
            ``segment``, no tissue contour reaches them) empty - TileByteCounts 0, which OpenSlide
            >= 4 reads as transparent (alpha 0) - without reading the slide there. Tiles with
            colour keep exactly the pixels above; a coarser level's tile over both kinds sees white
            where the empty level-0 tiles are. Much faster on large slides that are mostly
            background (a viewer shows the slide, or its own background, through the empty tiles).
            False: every tile holds the rendered pixels (slide included).

    Returns:
        :class:`TiffHeatmap` ``(heatmap, scores)`` paths.

    Raises:
        ConfigError: ``style.custom_downsample > 1``; bad ``vis_level``; unknown cmap/compression.
        FeatureFileError, RoiError: as :func:`render_heatmap`.
        WsiHeatmapsError: the output directory is not writable or the disk is full.
    """
    if int(style.custom_downsample) > 1:
        raise ConfigError(
            f"{slide.slide_id}: heatmap_arguments.custom_downsample {style.custom_downsample} is "
            "not supported with save_ext: tiff (the pyramid holds the downsampled levels); "
            "set it to 1"
        )
    plan = plan_heatmap(slide, scores, coords, patch_size_level0=patch_size_level0,
                        vis_level=vis_level, style=style,
                        convert_to_percentiles=convert_to_percentiles, roi=roi)
    w, h = plan.region_size
    dsx, dsy = slide.level_downsamples[plan.vis_level]
    mpp0 = getattr(slide, "mpp", None)
    mpp = None if mpp0 is None else (float(mpp0[0]) * dsx, float(mpp0[1]) * dsy)
    heat = band_renderer(slide, plan, contours, style)
    place = None                   # with an ROI: where its canvas goes in the level's
    sparse: dict = {}
    desc = (f"wsi-heatmaps heatmap of {slide.slide_id}; vis_level {plan.vis_level}; level "
            f"downsample {dsx:.6g}x{dsy:.6g}; level-0 origin "
            f"{plan.top_left[0]},{plan.top_left[1]}; "
            f"cmap {style.cmap}; alpha {style.alpha}")
    if roi is not None:    # the slide's geometry at vis_level, the ROI in its place
        origin = tuple(int(v) for v in (np.array(plan.top_left) * plan.scale).astype(int))
        canvas = tuple(int(v) for v in slide.level_dimensions[plan.vis_level])
        place = dict(origin=origin, size=(w, h), canvas=canvas)
        heat, box = _in_slide_geometry(heat, fill=(255, 255, 255), **place)
        w, h = canvas
        sparse = {"content_box": box}
        desc = (f"wsi-heatmaps heatmap of {slide.slide_id}; vis_level {plan.vis_level}; level "
                f"downsample {dsx:.6g}x{dsy:.6g}; level-0 origin 0,0; "
                f"roi {','.join(str(int(v)) for v in roi)} (level-0 px x1,y1,x2,y2; at {box[0]},{box[1]}-"
                f"{box[2]},{box[3]} px of this level, empty tiles outside); "
                f"cmap {style.cmap}; alpha {style.alpha}")
    if empty_background:   # only the tiles with heatmap colour are read, rendered and written
        at = dict(origin=place["origin"], canvas=place["canvas"]) if place else {}
        grid = content_tile_grid(plan, contours, style, tile=tile_size, **at)
        heat = sparse_band_renderer(slide, plan, contours, style, grid, tile=tile_size,
                                    origin=at.get("origin", (0, 0)))
        if place is not None:
            heat, _ = _in_slide_geometry(heat, fill=(255, 255, 255), **place)
        sparse["content_tiles"] = grid
        desc += "; tiles without heatmap colour stored empty"
    if band_rows is None:
        band_rows = max(1, BAND_TARGET_PX // max(w, 1) // CLAM_BLOCK) * CLAM_BLOCK
    out = write_pyramidal_tiff(out_path, heat, size=(w, h), mpp=mpp, tile_size=tile_size, compression=compression,
                               quality=quality, description=desc, min_size=min_size,
                               band_rows=band_rows, **sparse)
    raw_path = None
    if raw_scores:
        raw_path = Path(raw_scores)
        grey = score_band_renderer(plan, style)
        if place is not None:
            grey, _ = _in_slide_geometry(grey, fill=0, **place)
        # every tile of the score map keeps its values (it is not masked by tissue): only the ROI's
        # box makes tiles empty there
        write_pyramidal_tiff(raw_path, grey, size=(w, h), mpp=mpp,
                             tile_size=tile_size, compression="deflate",
                             description=desc.replace("heatmap of", "score map (255 * score) of").replace(
                                 "; tiles without heatmap colour stored empty", ""),
                             min_size=min_size, band_rows=band_rows, fill=0,
                             **{k: v for k, v in sparse.items() if k != "content_tiles"})
    return TiffHeatmap(out, raw_path)
