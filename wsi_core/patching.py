"""Patch grids over tissue contours (CLAM ``Wsi_Region`` / ``process_contour`` behaviour).

All coordinates are **level-0 px**. :func:`patch_grid` lays a regular grid over each tissue
contour's bounding box and keeps the patches CLAM's ``four_pt_hard`` check keeps; the
point-in-polygon test is :func:`points_in_contour`, a vectorised, bit-exact re-implementation of
OpenCV's integer ``cv2.pointPolygonTest(contour, pt, measureDist=False)``.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .levels import check_roi
from .tissue import TissueContours

__all__ = ["points_in_contour", "patch_grid", "dense_step", "center_shift_for"]

_MAX_CELLS = 1 << 22  # points x edges evaluated at once (bounds memory to ~100 MB of temporaries)


def points_in_contour(contour: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Exactly ``cv2.pointPolygonTest(contour, (float(x), float(y)), False)`` for many points.

    Args:
        contour: ``(K, 1, 2)`` or ``(K, 2)`` integer ``(x, y)`` vertices (closed implicitly).
        points: ``(M, 2)`` integer ``(x, y)``.

    Returns:
        ``(M,)`` int8: +1 inside, 0 on an edge or vertex, -1 outside (-1 for an empty contour).

    OpenCV's integer rule, per edge ``v0 -> v`` (the first edge runs from the last vertex to the
    first): an edge is skipped when both ends are at or above the point's row (``y <= py``),
    both strictly below it, or both strictly left of it -- but if skipped and it ends on the
    point's row at the point (or the point lies on a horizontal edge) the point is on the edge.
    Otherwise ``dist = (py - v0.y)(v.x - v0.x) - (px - v0.x)(v.y - v0.y)``; 0 means on the edge,
    else (sign flipped for upward edges) ``dist > 0`` counts a crossing; odd count = inside.
    Points are grouped by row so only the edges reaching that row are evaluated.
    """
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    cont = np.asarray(contour, dtype=np.int64).reshape(-1, 2)
    out = np.full(len(pts), -1, dtype=np.int8)
    if len(cont) == 0 or len(pts) == 0:
        return out
    x1, y1 = cont[:, 0], cont[:, 1]
    x0, y0 = np.roll(x1, 1), np.roll(y1, 1)
    order = np.argsort(pts[:, 1], kind="stable")
    rows, starts = np.unique(pts[order, 1], return_index=True)
    ends = np.append(starts[1:], len(order))
    for y, a, b in zip(rows.tolist(), starts.tolist(), ends.tolist()):
        e = np.flatnonzero(((y0 <= y) != (y1 <= y)) | (y1 == y))
        if len(e) == 0:
            continue
        edges = (x0[e], y0[e], x1[e], y1[e])
        idx = order[a:b]
        step = max(1, _MAX_CELLS // len(e))
        for c in range(0, len(idx), step):
            sel = idx[c : c + step]
            out[sel] = _row_test(pts[sel, 0], y, edges)
    return out


def _row_test(
    px: np.ndarray, y: int, edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """OpenCV's rule for points ``(px, y)`` on one row against the given edges -> (n,) int8."""
    ex0, ey0, ex1, ey1 = edges
    X = px[:, None]
    row_skip = ((ey0 <= y) & (ey1 <= y)) | ((ey0 > y) & (ey1 > y))
    skip = row_skip[None, :] | ((ex0 < X) & (ex1 < X))
    lo, hi = np.minimum(ex0, ex1), np.maximum(ex0, ex1)
    on_skip = skip & (ey1 == y) & ((X == ex1) | ((ey0 == y) & (lo <= X) & (X <= hi)))
    dist = (y - ey0) * (ex1 - ex0) - (X - ex0) * (ey1 - ey0)
    dist = np.where(ey1 < ey0, -dist, dist)
    on = (on_skip | (~skip & (dist == 0))).any(axis=1)
    odd = (~skip & (dist > 0)).sum(axis=1) % 2 == 1
    return np.where(on, 0, np.where(odd, 1, -1)).astype(np.int8)


def dense_step(patch_size: int, overlap: float) -> int:
    """Grid step (px at the patch level) for a fractional overlap: ``round(patch_size * (1 - overlap))``,
    at least 1 (26 px at 0.90 and 13 px at 0.95 for 256-px patches). CLAM truncates with ``int``;
    the two agree whenever the step is a whole number (overlap 0, 0.25, 0.5, 0.75, 0.875 for 256 px)
    and differ by one pixel otherwise (``int`` gives 25 and 12 above, through float error)."""
    return max(1, int(round(patch_size * (1 - overlap))))


def center_shift_for(step_size: float, patch_size: float) -> float:
    """CLAM's four_pt_hard centre shift for ``overlap = 1 - step/patch``:
    0.375 below 0.25, 0.5 below 0.95, else 0.625."""
    overlap = 1 - float(step_size / patch_size)
    if overlap < 0.25:
        return 0.375
    if overlap < 0.95:
        return 0.5
    return 0.625


def _four_pt_hard(contour: np.ndarray, cand: np.ndarray, ref: int, shift_frac: float) -> np.ndarray:
    """(n,) bool: CLAM isInContourV3_Hard for top-left candidates ``cand`` (n, 2) int64."""
    center = cand + ref // 2
    shift = int(ref // 2 * shift_frac)
    if shift <= 0:
        return points_in_contour(contour, center) >= 0
    offs = np.array([[-shift, -shift], [shift, shift], [shift, -shift], [-shift, shift]])
    probe = (center[:, None, :] + offs[None, :, :]).reshape(-1, 2)
    return (points_in_contour(contour, probe).reshape(-1, 4) >= 0).all(axis=1)


def _not_in_holes(holes: Sequence[np.ndarray], cand: np.ndarray, ref_patch_size: int) -> np.ndarray:
    """(n,) bool: the point cand + ref_patch_size/2 is not strictly inside any hole.

    Evaluated in doubled coordinates so an odd ref_patch_size (half-pixel centre, OpenCV's float
    branch) is handled exactly: the test is invariant to scaling both polygon and point by 2.
    """
    keep = np.ones(len(cand), dtype=bool)
    centre2 = 2 * cand + ref_patch_size
    for hole in holes:
        keep &= points_in_contour(2 * np.asarray(hole, dtype=np.int64), centre2) <= 0
    return keep


def patch_grid(
    contours: TissueContours,
    *,
    level_dimensions: Sequence[tuple[int, int]],
    level_downsamples: Sequence[tuple[float, float]],
    patch_level: int,
    patch_size: int,
    step_size: int,
    use_center_shift: bool = True,
    roi: tuple[int, int, int, int] | None = None,
    custom_downsample: int = 1,
) -> np.ndarray:
    """Level-0 top-left corners of the patches CLAM's ``Wsi_Region`` keeps.

    For each tissue contour (in order): the grid ``x in arange(bx, bx + bw, step0)``,
    ``y in arange(by, by + bh, step0)`` over its bounding box (clipped to the ROI), x-major
    (``meshgrid(..., indexing='ij')``), ``step0 = step_size * int(dsx)``; a candidate is kept
    when the ``four_pt_hard`` test passes (the centre ``(x, y) + ref//2`` shifted by
    ``±int(ref//2 * centre_shift)`` on both axes lies inside or on the contour at all four
    points; the centre alone when the shift is 0) and the point ``(x, y) + ref_patch_size/2`` is
    not strictly inside any of the contour's holes. ``centre_shift`` = 0.375 / 0.5 / 0.625 by
    overlap (see :func:`center_shift_for`), 0 when ``use_center_shift`` is False.

    Args:
        contours: tissue contours and holes, level-0 px.
        level_dimensions / level_downsamples: the slide's ``(w, h)`` and ``(dsx, dsy)`` per level.
        patch_level: level the patches are read at; patch_size, step_size: px at that level.
        roi: optional ``(x1, y1, x2, y2)`` level-0 px; candidates start inside it.
        custom_downsample: CLAM's custom_downsample (patch ``int(patch*dsx*c)``, step ``step*c``).

    Returns:
        ``(N, 2)`` int64 level-0 ``(x, y)``, contour by contour; ``(0, 2)`` when nothing fits.
        Unlike CLAM, a contour yielding exactly one patch keeps it (CLAM's ``process_contour``
        returns nothing for fewer than two patches).

    Raises:
        RoiError: the ROI is empty (x2 <= x1 or y2 <= y1) or entirely outside the slide.
    """
    if roi is not None:
        roi = check_roi(roi, tuple(level_dimensions[0]))
    dsx, dsy = (float(v) for v in level_downsamples[patch_level])
    if custom_downsample > 1:
        patch_eff = int(patch_size * dsx * custom_downsample)
        step_eff = int(step_size * custom_downsample)
        ref = patch_eff
    else:
        patch_eff, step_eff = int(patch_size), int(step_size)
        ref = int(patch_size * dsx)
    shift_frac = center_shift_for(step_eff, patch_eff) if use_center_shift else 0.0
    ids = (int(dsx), int(dsy))
    ref_patch_size = patch_eff * ids[0]
    steps = (step_eff * ids[0], step_eff * ids[1])
    out: list[np.ndarray] = []
    for cont, holes in zip(contours.tissue, contours.holes):
        cand = _candidates(cont, roi, steps)
        if len(cand) == 0:
            continue
        keep = _four_pt_hard(cont, cand, ref, shift_frac)
        cand = cand[keep]
        if holes and len(cand):
            cand = cand[_not_in_holes(holes, cand, ref_patch_size)]
        out.append(cand)
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return np.vstack(out).astype(np.int64, copy=False)


def _candidates(
    cont: np.ndarray, roi: tuple[int, int, int, int] | None, steps: tuple[int, int]
) -> np.ndarray:
    """(n, 2) int64 grid over the contour's bounding box (clipped to the ROI), x-major."""
    sx, sy, w, h = cv2.boundingRect(np.asarray(cont, dtype=np.int32))
    ex, ey = sx + w, sy + h
    if roi is not None:
        ex, ey = min(roi[2], ex), min(roi[3], ey)
        sx, sy = max(roi[0], sx), max(roi[1], sy)
        if ex - sx <= 0 or ey - sy <= 0:
            return np.zeros((0, 2), dtype=np.int64)
    xs = np.arange(sx, ex, steps[0], dtype=np.int64)
    ys = np.arange(sy, ey, steps[1], dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


# ---------------------------------------------------------------------- a provided bag as tissue


def footprint_cover(points: np.ndarray, corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(n,)`` bool: whether each point ``(x, y)`` lies in (or on the border of) any of the
    rectangles ``[x0, x0 + w] x [y0, y0 + h]`` with top-left ``corners`` ``(m, 2)``, level-0 px.

    Vectorised through a hash of the rectangles on a ``(w, h)`` cell grid (each rectangle touches
    at most four cells): O((n + m) log m), no loop over patches."""
    pts = np.asarray(points, np.int64).reshape(-1, 2)
    cor = np.asarray(corners, np.int64).reshape(-1, 2)
    inside = np.zeros(len(pts), bool)
    if len(pts) == 0 or len(cor) == 0:
        return inside
    w, h = (int(v) for v in size)
    cx, cy = cor[:, 0] // w, cor[:, 1] // h
    big = int(max(cy.max(), (pts[:, 1] // h).max()) + 3)
    keys = np.concatenate([(cx + dx) * big + (cy + dy) for dx in (0, 1) for dy in (0, 1)])
    owner = np.tile(np.arange(len(cor)), 4)
    order = np.argsort(keys, kind="stable")
    keys, owner = keys[order], owner[order]
    pk = (pts[:, 0] // w) * big + (pts[:, 1] // h)
    lo, hi = np.searchsorted(keys, pk, "left"), np.searchsorted(keys, pk, "right")
    counts = hi - lo
    if counts.sum() == 0:
        return inside
    which = np.repeat(np.arange(len(pts)), counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    rect = owner[np.arange(counts.sum()) + starts]
    p, c = pts[which], cor[rect]
    hit = (p[:, 0] >= c[:, 0]) & (p[:, 0] <= c[:, 0] + w) & (p[:, 1] >= c[:, 1]) & (p[:, 1] <= c[:, 1] + h)
    inside[which[hit]] = True
    return inside


def bag_grid(bag_coords: np.ndarray, *, footprint: tuple[int, int], step: int, use_center_shift: bool = True,
             roi: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Fine-pass patches over a provided bag's own footprint, for slides where the bag is the tissue.

    The candidates lie on each bag patch's own lattice (``(x, y) + step * (i, j)``; patches of one
    contour share it), so every bag patch is itself a candidate and, at overlap 0, the grid is the
    bag. A candidate is kept when CLAM's four-point test passes against the union of the bag's
    footprints (its centre shifted by ``±int(ref // 2 * centre_shift)``, all four points inside;
    see :func:`patch_grid`) and, with an ``roi``, its top-left lies inside it.

    Args:
        bag_coords: ``(N, 2)`` int64 level-0 top-left ``(x, y)`` of the bag's patches.
        footprint: ``(w, h)`` level-0 px of one patch. step: level-0 px between fine patches.
        roi: ``(x1, y1, x2, y2)`` level-0 px or None.

    Returns:
        ``(M, 2)`` int64 level-0 ``(x, y)``, x-major; ``(0, 2)`` for an empty bag.
    """
    bag = np.asarray(bag_coords, np.int64).reshape(-1, 2)
    if len(bag) == 0:
        return np.zeros((0, 2), np.int64)
    w, h = (int(v) for v in footprint)
    step = int(step)
    kx, ky = -(-w // step) - 1, -(-h // step) - 1
    offs = np.stack(np.meshgrid(np.arange(-kx, kx + 1), np.arange(-ky, ky + 1), indexing="ij"), -1).reshape(-1, 2)
    cand = np.unique((bag[:, None, :] + offs[None, :, :] * step).reshape(-1, 2), axis=0)
    if roi is not None:
        x1, y1, x2, y2 = (int(v) for v in roi)
        cand = cand[(cand[:, 0] >= x1) & (cand[:, 0] < x2) & (cand[:, 1] >= y1) & (cand[:, 1] < y2)]
    ref = w
    shift = int(ref // 2 * center_shift_for(step, w)) if use_center_shift else 0
    centre = cand + np.array([w // 2, h // 2])
    probes = [(-shift, -shift), (shift, shift), (shift, -shift), (-shift, shift)] if shift > 0 else [(0, 0)]
    keep = np.ones(len(cand), bool)
    for dx, dy in probes:
        keep &= footprint_cover(centre + np.array([dx, dy]), bag, (w, h))
    cand = cand[keep]
    return cand[np.lexsort((cand[:, 1], cand[:, 0]))]
