"""Score rasterisation on a canvas: pure numpy / OpenCV functions, no slide access.

CLAM's ``visHeatmap`` adds every patch's score into a float64 canvas and counts coverage with a
Python loop over patches. Here the same per-pixel mean is computed without a loop over patches:

* The canvas is cut into *cells* by the patches' left/right and top/bottom edges (a compressed
  grid: every pixel of a cell is covered by the same set of patches, so it has the same mean).
* Per-cell sums and counts come from a 2-D difference array (``np.add.at`` at each patch's four
  corners, then two ``cumsum``). Score sums are **int64 fixed point** (``round(score * 2**32)``),
  so the cumsum is exact and sums of exact binary fractions (0.5, 0.25, ...) come out exact.
* Cells are expanded to pixel rows band by band (:func:`expand_cells`), so memory stays of the
  order of one band of the output canvas.

Colour follows matplotlib's float-to-index rule (:func:`lut_indices`) on a uint8 lookup table
(:func:`colormap_lut`), exactly what ``(cmap(values) * 255)[..., :3].astype(uint8)`` gives.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import matplotlib
import numpy as np

from wsi_core.errors import ConfigError

__all__ = [
    "colormap_lut", "lut_indices", "tissue_mask", "PatchCells", "build_cells", "cell_stats",
    "cell_means", "band_heights", "expand_cells",
]

FIXED_POINT_BITS = 32


@functools.lru_cache(maxsize=64)
def colormap_lut(name: str) -> np.ndarray:
    """``(N, 3)`` uint8 RGB lookup table of a matplotlib colormap (``N = cmap.N``, 256 for jet):
    ``(cmap(arange(N)) * 255)[:, :3].astype(uint8)`` (truncation, like CLAM). Cached, read-only.

    Raises:
        ConfigError: ``name`` is not a matplotlib colormap (the message says where to fix it).
    """
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ConfigError(
            f"unknown colormap {name!r} in heatmap_arguments.cmap; use a matplotlib colormap "
            "name such as 'jet' or 'coolwarm'"
        ) from None
    lut = (cmap(np.arange(cmap.N)) * 255)[:, :3].astype(np.uint8)
    lut.flags.writeable = False
    return lut


def lut_indices(values: np.ndarray, n: int) -> np.ndarray:
    """matplotlib's float -> colormap index rule: ``clip(int(v * n), 0, n - 1)``.

    ``v * n == n`` maps to ``n - 1``, values above 1 to the last entry (the default "over"
    colour) and values below 0 to the first (the default "under" colour). ``values`` must be
    finite. Returns intp of the same shape.
    """
    return np.clip(values * n, 0, n - 1).astype(np.intp)


def tissue_mask(
    contours: object,
    *,
    region_size: tuple[int, int],
    scale: tuple[float, float],
    top_left: tuple[int, int],
    use_holes: bool,
) -> np.ndarray:
    """CLAM ``get_seg_mask``: filled tissue contours minus their holes on the canvas.

    Args:
        contours: a ``TissueContours`` (``.tissue``: list of (K, 1, 2) int32 level-0 px;
            ``.holes``: per tissue contour a list of hole contours).
        region_size: canvas ``(w, h)`` px.
        scale: ``(1 / dsx, 1 / dsy)`` level-0 -> canvas.
        top_left: level-0 px origin of the canvas (the ROI's top-left, else (0, 0)).
        use_holes: clear the holes of each contour.

    Returns:
        ``(h, w)`` bool. Contour points are scaled with ``int32(point * scale)`` (truncation);
        the offset is ``int32(-top_left * scale)``; contours are drawn largest (scaled
        ``cv2.contourArea``) first, each immediately followed by its own holes, as CLAM does.
    """
    w, h = (int(v) for v in region_size)
    mask = np.zeros((h, w), dtype=np.uint8)
    sc = np.array([float(scale[0]), float(scale[1])])
    offset = tuple(int(v) for v in (np.array(top_left) * sc * -1).astype(np.int32))
    tissue = [np.array(c * sc, dtype=np.int32) for c in contours.tissue]
    holes = [[np.array(hc * sc, dtype=np.int32) for hc in hs] for hs in contours.holes]
    holes += [[] for _ in range(len(tissue) - len(holes))]
    pairs = sorted(zip(tissue, holes), key=lambda p: cv2.contourArea(p[0]), reverse=True)
    for cont, cont_holes in pairs:
        cv2.drawContours(mask, [cont], -1, 1, thickness=-1, offset=offset)
        if use_holes and cont_holes:
            cv2.drawContours(mask, cont_holes, -1, 0, thickness=-1, offset=offset)
    return mask.astype(bool)


@dataclass(frozen=True)
class PatchCells:
    """Patches on a compressed cell grid of a ``(h, w)`` canvas.

    xs: ``(nx + 1,)`` int64 pixel x edges (``xs[0] = 0``, ``xs[-1] = w``); ys likewise.
    kx0, kx1, ky0, ky1: ``(n,)`` int64 cell range ``[k0, k1)`` of each (non-empty) patch.
    fixed: ``(n,)`` int64 fixed-point contribution of each patch (``round(v * 2**bits)``).
    above: ``(n,)`` bool - the patch's score is >= the threshold (it gets coloured).
    bits: fixed-point bits used (32 unless the scores are huge).
    """

    xs: np.ndarray
    ys: np.ndarray
    kx0: np.ndarray
    kx1: np.ndarray
    ky0: np.ndarray
    ky1: np.ndarray
    fixed: np.ndarray
    above: np.ndarray
    bits: int

    def cell_rows(self, a: int, b: int) -> tuple[int, int]:
        """Cell rows ``[c0, c1)`` that hold pixel rows ``[a, b)`` (``a < b``)."""
        c0 = int(np.searchsorted(self.ys, a, side="right")) - 1
        c1 = int(np.searchsorted(self.ys, b, side="left"))
        return c0, c1

    @property
    def widths(self) -> np.ndarray:
        """``(nx,)`` int64 pixel width of every cell column."""
        return np.diff(self.xs)


def _fixed_bits(values: np.ndarray) -> int:
    bound = float(np.abs(values).max(initial=0.0)) * max(len(values), 1)
    if bound <= 0:
        return FIXED_POINT_BITS
    return int(min(FIXED_POINT_BITS, np.floor(61 - np.log2(bound))))


def _edges(size: int, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell edges ``{0, size} | lo | hi`` (sorted, unique) and the edge index of each ``lo`` and
    ``hi`` - ``np.unique`` + ``searchsorted`` through a presence table of ``size + 1`` entries
    (``O(n + size)``: every value lies in ``[0, size]``)."""
    present = np.zeros(size + 1, dtype=bool)
    present[[0, size]] = True
    present[lo] = True
    present[hi] = True
    rank = np.cumsum(present, dtype=np.int64) - 1
    return np.flatnonzero(present).astype(np.int64), rank[lo], rank[hi]


def build_cells(
    x0: np.ndarray,
    y0: np.ndarray,
    patch_size: tuple[int, int],
    canvas_size: tuple[int, int],
    values: np.ndarray,
    above: np.ndarray,
) -> PatchCells:
    """Put patches on the compressed cell grid of the canvas.

    Args:
        x0, y0: ``(n,)`` int canvas px top-left of each patch (may lie partly outside).
        patch_size: ``(pw, ph)`` canvas px.
        canvas_size: ``(w, h)`` canvas px. Patches are clipped to it (CLAM's slices clip at the
            right/bottom edge; a negative start is clipped at 0 here).
        values: ``(n,)`` float64 contribution of each patch to the pixel sums.
        above: ``(n,)`` bool, patch is coloured.
    """
    w, h = (int(v) for v in canvas_size)
    pw, ph = (int(v) for v in patch_size)
    x0 = np.asarray(x0, dtype=np.int64)
    y0 = np.asarray(y0, dtype=np.int64)
    keep = (x0 + pw > 0) & (x0 < w) & (y0 + ph > 0) & (y0 < h)      # a non-empty box after clipping
    values, above = np.asarray(values, dtype=np.float64), np.asarray(above, dtype=bool)
    if not keep.all():
        x0, y0, values, above = x0[keep], y0[keep], values[keep], above[keep]
    bits = _fixed_bits(values)
    xs, kx0, kx1 = _edges(w, np.clip(x0, 0, w), np.clip(x0 + pw, 0, w))     # one axis at a time: fewer
    ys, ky0, ky1 = _edges(h, np.clip(y0, 0, h), np.clip(y0 + ph, 0, h))     # temporaries for a million patches
    fixed = values * 2.0**bits
    np.rint(fixed, out=fixed)
    return PatchCells(
        xs=xs, ys=ys, kx0=kx0, kx1=kx1, ky0=ky0, ky1=ky1,
        fixed=fixed.astype(np.int64),
        above=above,
        bits=bits,
    )


SPLIT_BITS = 20     # fixed-point sums go through float64 bincounts in two exact 20-bit-split halves


class _Boxes:
    """Boxes ``[r0, r1) x [c0, c1)`` as corners of a flat ``(rows + 1) * (cols + 1)`` difference
    array: ``+`` at ``(r0, c0)`` and ``(r1, c1)``, ``-`` at ``(r0, c1)`` and ``(r1, c0)``; every
    sum over the boxes is one ``bincount`` per corner (no corner or weight array is concatenated
    or tiled: a million boxes stay within ~100 MiB of temporaries)."""

    def __init__(self, shape: tuple[int, int], rows: Sequence[np.ndarray], cols: Sequence[np.ndarray]) -> None:
        (r0, r1), (c0, c1) = rows, cols
        self.shape, stride = shape, shape[1] + 1
        self.size = (shape[0] + 1) * stride
        self.corners = ((1, r0 * stride + c0), (-1, r0 * stride + c1), (-1, r1 * stride + c0), (1, r1 * stride + c1))

    def _sum(self, weights: np.ndarray | None, where: np.ndarray | None = None) -> np.ndarray:
        """Flat difference array: signed bincounts of the four corners (float64 with weights)."""
        out = None
        for sign, idx in self.corners:
            b = np.bincount(idx if where is None else idx[where], weights=weights, minlength=self.size)
            if out is None:
                out = b
            elif sign > 0:
                out += b
            else:
                out -= b
        return out

    def _integrate(self, diff: np.ndarray, dtype: type) -> np.ndarray:
        diff = diff.reshape(self.shape[0] + 1, self.shape[1] + 1).astype(dtype, copy=False)
        np.cumsum(diff, axis=0, out=diff)
        np.cumsum(diff, axis=1, out=diff)
        return diff[:-1, :-1]

    def count(self, where: np.ndarray | None = None) -> np.ndarray:
        """``int32`` number of boxes (those with ``where`` True) covering each cell."""
        return self._integrate(self._sum(None, where), np.int32)

    def total(self, fixed: np.ndarray) -> np.ndarray:
        """``int64`` sum of ``fixed`` (int64 per box) over the boxes covering each cell, exact:
        ``fixed = hi * 2**SPLIT_BITS + lo`` with ``0 <= lo < 2**SPLIT_BITS``; each half is summed by
        float64 ``bincount``s, whose partial sums stay integers below 2**53 while
        ``4 n * 2**SPLIT_BITS < 2**53`` and ``4 * sum |hi| < 2**53``."""
        hi = self._sum((fixed >> SPLIT_BITS).astype(np.float64)).astype(np.int64)
        lo = self._sum((fixed & ((1 << SPLIT_BITS) - 1)).astype(np.float64)).astype(np.int64)
        hi <<= SPLIT_BITS
        hi += lo
        return self._integrate(hi, np.int64)


def cell_stats(cells: PatchCells, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell ``(sums int64 fixed point, counts int32, coloured-patch counts int32)`` for cell
    rows ``[c0, c1)``, each ``(c1 - c0, nx)``: box sums on a difference array (exact integers),
    one ``bincount`` per corner (:class:`_Boxes`) instead of a scatter-add (``np.add.at``).

    Raises:
        ValueError: 2**30 patches or more (beyond what the float64 bincounts sum exactly)."""
    sel = (cells.ky0 < c1) & (cells.ky1 > c0)
    if len(cells.fixed) >= 1 << (52 - SPLIT_BITS - 2):
        raise ValueError(f"{len(cells.fixed)} patches in one band: more than the exact fixed-point sum allows")
    rows = (np.maximum(cells.ky0[sel], c0) - c0, np.minimum(cells.ky1[sel], c1) - c0)
    boxes = _Boxes((c1 - c0, len(cells.xs) - 1), rows, (cells.kx0[sel], cells.kx1[sel]))
    return boxes.total(cells.fixed[sel]), boxes.count(), boxes.count(cells.above[sel])


def cell_means(sums: np.ndarray, counts: np.ndarray, bits: int, *, binarize: bool) -> np.ndarray:
    """float64 mean score per cell (0 where no patch covers it); ``np.around`` when binarized."""
    mean = np.zeros(sums.shape, dtype=np.float64)
    nz = counts > 0
    mean[nz] = sums[nz].astype(np.float64) / counts[nz] / 2.0**bits
    return np.around(mean) if binarize else mean


def band_heights(cells: PatchCells, c0: int, c1: int, a: int, b: int) -> np.ndarray:
    """``(c1 - c0,)`` int64 pixel rows of cell rows ``[c0, c1)`` that fall in pixel rows ``[a, b)``."""
    return np.diff(np.clip(cells.ys[c0:c1 + 1], a, b))


def expand_cells(cell_values: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Pixels from per-cell values: ``(heights.sum(), widths.sum(), ...)``, dtype kept.

    ``cell_values`` is ``(len(heights), len(widths), ...)``; each cell becomes a
    ``heights[i] x widths[j]`` block (columns are repeated first, then whole rows are copied).
    """
    return np.repeat(np.repeat(cell_values, widths, axis=1), heights, axis=0)


BAND_PIXELS = 1 << 22      # canvas pixels per row band (~4 Mpx: 32 MiB of float64 when blurring)


def row_bands(h: int, w: int, min_rows: int = 1, band_pixels: int = BAND_PIXELS) -> Iterator[tuple[int, int]]:
    """Row ranges ``[a, b)`` covering an ``(h, w)`` canvas in bands of about ``band_pixels``
    pixels (at least ``min_rows`` rows), so per-band buffers stay bounded."""
    step = max(band_pixels // max(w, 1), min_rows, 1)
    for a in range(0, h, step):
        yield a, min(h, a + step)


def copy_masked(src: np.ndarray, mask: np.ndarray, dst: np.ndarray) -> None:
    """``dst[mask] = src[mask]`` for (h, w, 3) uint8 images and an (h, w) uint8 0/1 mask."""
    res = cv2.copyTo(src, mask, dst)
    if res is not dst and not np.shares_memory(res, dst):  # pragma: no cover - binding copied
        dst[...] = res
