"""wsi_core.patching: OpenCV-exact point-in-polygon and CLAM Wsi_Region patch-grid parity."""
from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from wsi_core import (
    RoiError,
    TissueContours,
    dense_step,
    load_clam_mask_pkl,
    open_slide,
    patch_grid,
    points_in_contour,
)
from wsi_core.patching import center_shift_for

RAW = "heatmap_raw_results"


def _cv2_test(contour: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.array(
        [cv2.pointPolygonTest(contour, (float(x), float(y)), False) for x, y in pts], np.int8
    )


def _coords(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["coords"][()]


# --------------------------------------------------------------------------- points_in_contour


def _probe_points(contour: np.ndarray, rng: np.random.Generator, n_random: int) -> np.ndarray:
    v = contour.reshape(-1, 2).astype(np.int64)
    x, y, w, h = cv2.boundingRect(contour)
    rand = np.stack([rng.integers(x - 5, x + w + 5, n_random),
                     rng.integers(y - 5, y + h + 5, n_random)], axis=1)
    verts = v[rng.choice(len(v), min(len(v), 800), replace=False)]
    nxt = np.roll(v, -1, axis=0)
    mids = (v + nxt) // 2  # on axis-aligned / diagonal edges when integral
    mids = mids[rng.choice(len(mids), min(len(mids), 800), replace=False)]
    near = verts + rng.integers(-1, 2, verts.shape)
    return np.vstack([rand, verts, mids, near])


def test_points_in_contour_matches_cv2_on_clam_contours(
    clam_reference_dir: Path, mil_dir: Path
) -> None:
    rng = np.random.default_rng(0)
    paths = list((clam_reference_dir / "real_sb" / RAW).rglob("*_mask.pkl"))
    paths += list((mil_dir / "clam_demo_parisa").glob("*_mask.pkl"))
    assert len(paths) == 4
    for p in paths:
        for cont in load_clam_mask_pkl(p).tissue:
            pts = _probe_points(cont, rng, 1500)
            got = points_in_contour(cont, pts)
            assert got.dtype == np.int8 and got.shape == (len(pts),)
            want = _cv2_test(cont, pts)
            np.testing.assert_array_equal(got, want)
            assert {-1, 0, 1} <= set(got.tolist())


def test_points_in_contour_matches_cv2_on_random_polygons() -> None:
    """Random (self-intersecting, repeated-vertex, axis-aligned) polygons, every grid point."""
    rng = np.random.default_rng(1)
    gx, gy = np.meshgrid(np.arange(-2, 23), np.arange(-2, 23))
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    for k in range(150):
        n = int(rng.integers(1, 12))
        poly = rng.integers(0, 21, (n, 2))
        if k % 3 == 0:  # snap to a coarse lattice: many horizontal / vertical edges
            poly = poly // 5 * 5
        cont = poly.reshape(-1, 1, 2).astype(np.int32)
        np.testing.assert_array_equal(points_in_contour(cont, pts), _cv2_test(cont, pts))


def test_points_in_contour_edge_cases() -> None:
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.int32).reshape(-1, 1, 2)
    pts = np.array([[5, 5], [0, 0], [10, 5], [5, 10], [11, 5], [-1, -1], [5, 0]])
    np.testing.assert_array_equal(points_in_contour(square, pts), [1, 0, 0, 0, -1, -1, 0])
    assert points_in_contour(np.zeros((0, 1, 2), np.int32), pts).tolist() == [-1] * len(pts)
    assert points_in_contour(square, np.zeros((0, 2), np.int64)).shape == (0,)
    # flat (K, 2) contour input is accepted too
    np.testing.assert_array_equal(points_in_contour(square.reshape(-1, 2), pts),
                                  points_in_contour(square, pts))


# --------------------------------------------------------------------------- CLAM parity

REAL_CASES = [
    # (run, exp, label, slide_id, roi, pass-2 h5 suffix)
    ("real_sb", "REAL_SB", "class_a", "CMU-1-Small-Region", None, "_0.5_roi_False.h5"),
    ("real_sb", "REAL_SB", "class_b", "tcga-cr-7395-01a-01-ts1", None, "_0.5_roi_False.h5"),
    ("real_mb_roi", "REAL_MB_ROI", "class_a", "CMU-1-Small-Region", (400, 700, 1900, 2300),
     "_0.5_roi_True.h5"),
]


@pytest.mark.parametrize(("run", "exp", "label", "slide_id", "roi", "suffix"), REAL_CASES)
def test_patch_grid_reproduces_clam_coords(
    slides_dir: Path, clam_reference_dir: Path, run: str, exp: str, label: str,
    slide_id: str, roi, suffix: str,  # noqa: ANN001
) -> None:
    """Pass 1 (step 256 = patch, no ROI; centre shift 0.375) and pass 2 (step 128, ROI when
    used; centre shift 0.5) equal CLAM's coords exactly: same set AND same order."""
    base = clam_reference_dir / run / RAW / exp / label / slide_id
    contours = load_clam_mask_pkl(base / f"{slide_id}_mask.pkl")
    with open_slide(slides_dir / f"{slide_id}.svs") as s:
        geo = {"level_dimensions": s.level_dimensions, "level_downsamples": s.level_downsamples}
    pass1 = patch_grid(contours, **geo, patch_level=0, patch_size=256, step_size=256)
    pass2 = patch_grid(contours, **geo, patch_level=0, patch_size=256,
                       step_size=dense_step(256, 0.5), roi=roi)
    assert pass1.dtype == np.int64 and pass1.ndim == 2 and pass1.shape[1] == 2
    for got, ref_file in [(pass1, f"{slide_id}.h5"), (pass1, f"{slide_id}_blockmap.h5"),
                          (pass2, f"{slide_id}{suffix}")]:
        ref = _coords(base / ref_file)
        assert set(map(tuple, got.tolist())) == set(map(tuple, ref.tolist())), ref_file
        np.testing.assert_array_equal(got, ref)  # order matches too


@pytest.mark.parametrize("slide_id", ["C3L-01663-21", "C3L-03262-22"])
def test_patch_grid_reproduces_clam_demo_cptac_coords(mil_dir: Path, slide_id: str) -> None:
    """Real CLAM demo outputs (bwh_biopsy, patch 256 at level 0). Only level 0 matters for the
    grid at patch_level 0, so level_downsamples [(1, 1)] stands in for the real slide."""
    d = mil_dir / "clam_demo_parisa"
    contours = load_clam_mask_pkl(d / f"{slide_id}_mask.pkl")
    geo = {"level_dimensions": [(13943, 14869)], "level_downsamples": [(1.0, 1.0)]}
    for step, name in [(256, f"{slide_id}.h5"), (256, f"{slide_id}_blockmap.h5"),
                       (128, f"{slide_id}_0.5_roi_False.h5")]:
        got = patch_grid(contours, **geo, patch_level=0, patch_size=256, step_size=step)
        np.testing.assert_array_equal(got, _coords(d / name))


# --------------------------------------------------------------------------- semantics


def _clam_reference_grid(contours, level_downsamples, patch_level, patch_size, step_size,  # noqa: ANN001
                         use_center_shift=True, roi=None, custom_downsample=1):  # noqa: ANN001
    """Per-candidate loop with cv2.pointPolygonTest, written from CLAM's documented behaviour
    (Wsi_Region + process_contour + four_pt_hard + isInHoles), keeping 1-patch contours."""
    ds = level_downsamples[patch_level]
    if custom_downsample > 1:
        patch_eff = int(patch_size * ds[0] * custom_downsample)
        step_eff = int(step_size * custom_downsample)
        ref = patch_eff
    else:
        patch_eff, step_eff, ref = patch_size, step_size, int(patch_size * ds[0])
    shift_frac = center_shift_for(step_eff, patch_eff) if use_center_shift else 0.0
    pds = (int(ds[0]), int(ds[1]))
    ref_patch = patch_eff * pds[0]
    shift = int(ref // 2 * shift_frac)
    out = []
    for cont, holes in zip(contours.tissue, contours.holes):
        sx, sy, w, h = cv2.boundingRect(cont)
        ex, ey = sx + w, sy + h
        if roi is not None:
            ex, ey, sx, sy = min(roi[2], ex), min(roi[3], ey), max(roi[0], sx), max(roi[1], sy)
            if ex - sx <= 0 or ey - sy <= 0:
                continue
        for x in np.arange(sx, ex, step_eff * pds[0]):
            for y in np.arange(sy, ey, step_eff * pds[1]):
                cx, cy = x + ref // 2, y + ref // 2
                probes = ([(cx - shift, cy - shift), (cx + shift, cy + shift),
                           (cx + shift, cy - shift), (cx - shift, cy + shift)]
                          if shift > 0 else [(cx, cy)])
                if any(cv2.pointPolygonTest(cont, (float(a), float(b)), False) < 0
                       for a, b in probes):
                    continue
                c = (float(x + ref_patch / 2), float(y + ref_patch / 2))
                if any(cv2.pointPolygonTest(hh, c, False) > 0 for hh in holes):
                    continue
                out.append((x, y))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def _blob_with_holes() -> TissueContours:
    """A non-convex level-0 tissue contour with two holes, plus a small second blob."""
    mask = np.zeros((700, 900), np.uint8)
    cv2.ellipse(mask, (420, 330), (380, 300), 15, 0, 360, 255, -1)
    cv2.rectangle(mask, (380, 0), (460, 250), 0, -1)  # notch
    cv2.circle(mask, (300, 400), 90, 0, -1)  # hole
    cv2.rectangle(mask, (520, 300), (640, 380), 0, -1)  # hole
    cv2.circle(mask, (850, 650), 30, 255, -1)  # small blob
    cs, hier = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    hier = hier[0][:, 3]
    outer = [i for i in range(len(cs)) if hier[i] == -1]
    tissue = [(cs[i] * 3).astype(np.int32) for i in outer]  # level-0 px at ds 3
    holes = [[(cs[j] * 3).astype(np.int32) for j in range(len(cs)) if hier[j] == i]
             for i in outer]
    return TissueContours(tissue, holes)


# level 2 has a non-integer downsample: CLAM's four-point test uses int(patch * 3.9) while the
# grid step and hole test use patch * int(3.9)
GEO = {"level_dimensions": [(2700, 2100), (1350, 1050), (692, 538)],
       "level_downsamples": [(1.0, 1.0), (2.0, 2.0), (3.9, 3.903)]}
SEM_CASES = [
    dict(patch_level=0, patch_size=256, step_size=256),
    dict(patch_level=0, patch_size=256, step_size=128),
    dict(patch_level=0, patch_size=200, step_size=20),  # overlap 0.9 -> 0.5; 0.95+ -> 0.625
    dict(patch_level=0, patch_size=200, step_size=8),
    dict(patch_level=0, patch_size=255, step_size=100),  # odd: half-pixel hole test
    dict(patch_level=1, patch_size=128, step_size=64),
    dict(patch_level=2, patch_size=64, step_size=32),
    dict(patch_level=2, patch_size=64, step_size=48, custom_downsample=2),
    dict(patch_level=0, patch_size=128, step_size=64, use_center_shift=False),
    dict(patch_level=0, patch_size=128, step_size=96, custom_downsample=2),
    dict(patch_level=0, patch_size=160, step_size=80, roi=(500, 300, 1700, 1400)),
    dict(patch_level=0, patch_size=160, step_size=80, roi=(2400, 1850, 2700, 2100)),
]


@pytest.mark.parametrize("kw", SEM_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_patch_grid_matches_per_candidate_reference(kw: dict) -> None:
    contours = _blob_with_holes()
    assert len(contours) == 2 and sorted(len(h) for h in contours.holes) == [0, 2]
    got = patch_grid(contours, **GEO, **kw)
    want = _clam_reference_grid(contours, GEO["level_downsamples"], **kw)
    assert got.dtype == np.int64 and got.shape[1] == 2
    np.testing.assert_array_equal(got, want)


def test_patch_grid_hole_excludes_patches() -> None:
    c = _blob_with_holes()
    no_holes = TissueContours(c.tissue, [[] for _ in c.tissue])
    with_h = patch_grid(c, **GEO, patch_level=0, patch_size=128, step_size=64)
    without = patch_grid(no_holes, **GEO, patch_level=0, patch_size=128, step_size=64)
    assert len(with_h) < len(without)
    assert set(map(tuple, with_h.tolist())) < set(map(tuple, without.tolist()))


def test_patch_grid_keeps_single_patch_contour() -> None:
    """CLAM drops a contour that yields exactly one patch; we keep it."""
    sq = np.array([[0, 0], [300, 0], [300, 300], [0, 300]], np.int32).reshape(-1, 1, 2)
    got = patch_grid(TissueContours([sq], [[]]), level_dimensions=[(1000, 1000)],
                     level_downsamples=[(1.0, 1.0)], patch_level=0, patch_size=256,
                     step_size=256)
    np.testing.assert_array_equal(got, [[0, 0]])


def test_patch_grid_empty_results() -> None:
    geo = {"level_dimensions": [(1000, 1000)], "level_downsamples": [(1.0, 1.0)]}
    empty = patch_grid(TissueContours(), **geo, patch_level=0, patch_size=256, step_size=256)
    assert empty.shape == (0, 2) and empty.dtype == np.int64
    sq = np.array([[0, 0], [300, 0], [300, 300], [0, 300]], np.int32).reshape(-1, 1, 2)
    off = patch_grid(TissueContours([sq], [[]]), **geo, patch_level=0, patch_size=256,
                     step_size=256, roi=(600, 600, 900, 900))
    assert off.shape == (0, 2)


@pytest.mark.parametrize(
    ("roi", "what"),
    [((500, 100, 400, 200), "is empty"), ((100, 300, 200, 300), "is empty"),
     ((1000, 0, 1200, 100), "lies outside"), ((-50, -80, 0, 10), "lies outside"),
     ((10, 1000, 20, 1100), "lies outside")],
)
def test_roi_errors(roi, what: str) -> None:  # noqa: ANN001
    sq = np.array([[0, 0], [300, 0], [300, 300], [0, 300]], np.int32).reshape(-1, 1, 2)
    with pytest.raises(RoiError) as ei:
        patch_grid(TissueContours([sq], [[]]), level_dimensions=[(1000, 1000)],
                   level_downsamples=[(1.0, 1.0)], patch_level=0, patch_size=256,
                   step_size=256, roi=roi)
    msg = str(ei.value)
    x1, y1, x2, y2 = roi
    assert f"ROI (x1={x1}, y1={y1}, x2={x2}, y2={y2}) {what}" in msg
    assert "1000x1000 slide" in msg and "x1,y1,x2,y2 are level-0 px" in msg


def test_dense_step_and_center_shift() -> None:
    assert dense_step(256, 0.5) == 128
    assert dense_step(256, 0.0) == 256
    assert dense_step(224, 0.9) == 22
    assert center_shift_for(256, 256) == 0.375
    assert center_shift_for(200, 256) == 0.375  # overlap 0.22
    assert center_shift_for(192, 256) == 0.5  # overlap 0.25
    assert center_shift_for(26, 256) == 0.5  # overlap ~0.898
    assert center_shift_for(12, 256) == 0.625  # overlap ~0.953
