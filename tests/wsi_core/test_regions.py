"""wsi_core.regions: band planning, in-memory window cutting, pixel-exactness on real slides."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_core import dense_step, open_slide, patch_grid
from wsi_core.regions import (
    ReadStats,
    cut_windows,
    iter_patches_from_bands,
    level_downsample,
    plan_bands,
    planned_bytes,
)
from wsi_core.tissue import SegmentationParams, segment_tissue


class _ArraySlide:
    """Level-0-only stand-in for Slide over an RGB array; black outside (as OpenSlide)."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.properties = {"openslide.level[0].downsample": "1"}
        self.level_downsamples = [(1.0, 1.0)]
        self.reads = 0

    def read_region(self, location, level, size):
        assert level == 0
        self.reads += 1
        (x, y), (w, h) = location, size
        out = np.zeros((h, w, 3), np.uint8)
        H, W = self.img.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self.img[y0:y1, x0:x1]
        return out


def _grid(x0: int, y0: int, x1: int, y1: int, step: int) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step), indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)


def _check_exact(slide, coords, *, level, size, **kw) -> ReadStats:
    """Every window equals the per-patch read_region, every coord yielded once."""
    stats, seen = ReadStats(), np.zeros(len(coords), int)
    for idx, patches in iter_patches_from_bands(slide, coords, patch_level=level, patch_size=size,
                                                stats=stats, **kw):
        assert patches.shape == (len(idx), size, size, 3) and patches.dtype == np.uint8
        seen[idx] += 1
        for i, win in zip(idx, patches):
            np.testing.assert_array_equal(win, slide.read_region(tuple(coords[i]), level, (size, size)),
                                          err_msg=f"patch {coords[i].tolist()}")
    assert (seen == 1).all()
    return stats


# ----------------------------------------------------------------------------- synthetic


def test_cut_windows_equals_slicing() -> None:
    rng = np.random.default_rng(0)
    region = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    offs = np.array([[0, 0], [54, 34], [3, 17], [10, 2]], np.int64)  # (col, row)
    got = cut_windows(region, offs, 16)
    assert got.shape == (4, 16, 16, 3) and got.flags.c_contiguous
    for (c, r), win in zip(offs, got):
        np.testing.assert_array_equal(win, region[r:r + 16, c:c + 16])


def test_plan_covers_each_patch_once_and_bounds_regions() -> None:
    coords = _grid(0, 0, 3000, 1000, 25)
    bands = plan_bands(coords, downsample=1.0, patch_size=256, max_region_px=1024)
    idx = np.concatenate([b.indices for b in bands])
    assert np.array_equal(np.sort(idx), np.arange(len(coords)))
    assert all(max(b.size) <= 1024 for b in bands)
    for b in bands:  # every window lies inside its region, at its coordinate
        assert (b.offsets >= 0).all() and (b.offsets.max(0) + 256 <= np.array(b.size)).all()
        np.testing.assert_array_equal(coords[b.indices], np.array(b.location) + b.offsets)
    assert planned_bytes(bands) < len(coords) * 256 * 256 * 3 / 20
    rows = plan_bands(coords, downsample=1.0, patch_size=256, band_rows=2, max_region_px=10_000)
    assert all(len(np.unique(b.offsets[:, 1])) <= 2 for b in rows)


def test_plan_phases_and_fallbacks() -> None:
    coords = np.array([[0, 0], [8, 4], [5, 4], [13, 4], [-4, 8]], np.int64)
    bands = plan_bands(coords, downsample=4.0, patch_size=16)
    by_idx = {int(i): b for b in bands for i in b.indices}
    assert by_idx[0] is by_idx[1]                       # same phase (0, 0): one read
    assert by_idx[2] is by_idx[3] and by_idx[2] is not by_idx[0]  # phase (1, 0)
    assert by_idx[2].location[0] % 4 == 1
    assert by_idx[4].size == (16, 16) and by_idx[4].location == (-4, 8)  # negative: alone
    exact = plan_bands(coords[:4], downsample=2.0005, patch_size=16)
    assert len(exact) == 4 and all(len(b.indices) == 1 for b in exact)
    approx = plan_bands(coords[:4], downsample=2.0005, patch_size=16, exact=False)
    assert len(approx) == 1
    b = approx[0]
    lvl = np.floor(coords[:4][b.indices] / 2.0005).astype(int)
    np.testing.assert_array_equal(np.floor(np.array(b.location) / 2.0005).astype(int) + b.offsets, lvl)
    assert plan_bands(np.zeros((0, 2)), downsample=1.0, patch_size=16) == []


def test_iter_on_array_slide_with_edges_and_batches() -> None:
    rng = np.random.default_rng(1)
    slide = _ArraySlide(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    coords = _grid(250, 150, 400, 300, 7)          # many windows run off the right/bottom edge
    stats = _check_exact(slide, coords, level=0, size=64, batch_size=10, max_region_px=128)
    assert stats.windows == len(coords) and stats.regions == slide.reads - len(coords)
    assert stats.bytes_decoded == sum(b.bytes_decoded for b in plan_bands(
        coords, downsample=1.0, patch_size=64, max_region_px=128))


# ----------------------------------------------------------------------------- real slides


@pytest.fixture(scope="module")
def cmu_contours(slides_dir: Path):
    with open_slide(slides_dir / "CMU-1-Small-Region.svs") as slide:
        return segment_tissue(slide, SegmentationParams(a_t=1, a_h=1))


def _dense_grid(slide, contours, *, level, size, overlap, roi):
    return patch_grid(contours, level_dimensions=slide.level_dimensions,
                      level_downsamples=slide.level_downsamples, patch_level=level,
                      patch_size=size, step_size=dense_step(size, overlap), roi=roi)


@pytest.mark.shared
def test_cmu_level0_dense_90_is_pixel_exact(slides_dir: Path, cmu_contours) -> None:
    with open_slide(slides_dir / "CMU-1-Small-Region.svs") as slide:
        coords = _dense_grid(slide, cmu_contours, level=0, size=256, overlap=0.9,
                             roi=(900, 2600, 1300, 2967))   # patches run off the bottom edge
        assert len(coords) > 50 and (coords[:, 1] + 256 > slide.dimensions[1]).any()
        stats = _check_exact(slide, coords, level=0, size=256)
    assert stats.regions == 1 and stats.bytes_decoded < len(coords) * 256 * 256 * 3 / 20


@pytest.mark.shared
def test_dense_counts_follow_clam_step(slides_dir: Path, cmu_contours) -> None:
    """step = round(256 * (1 - overlap)): 26 at 0.90 and 13 at 0.95 (CLAM's int would give 25 and 12
    through float error); whole-number steps are CLAM's."""
    assert dense_step(256, 0.9) == 26 and dense_step(256, 0.95) == 13 and dense_step(256, 0.5) == 128
    assert dense_step(256, 0.75) == 64 and dense_step(256, 0.875) == 32 and dense_step(256, 0.0) == 256
    roi = (800, 800, 1400, 1400)  # mostly tissue: the lattice from the ROI corner, nearly full
    with open_slide(slides_dir / "CMU-1-Small-Region.svs") as slide:
        for overlap, step in ((0.5, 128), (0.9, 26), (0.95, 13)):
            coords = _dense_grid(slide, cmu_contours, level=0, size=256, overlap=overlap, roi=roi)
            assert ((coords - 800) % step == 0).all()
            xs, ys = np.unique(coords[:, 0]), np.unique(coords[:, 1])
            assert set(np.diff(xs)) == {step} and set(np.diff(ys)) == {step}
            n_side = -(-(roi[2] - roi[0]) // step)  # candidates per side
            assert 0.6 * n_side ** 2 <= len(coords) <= n_side ** 2, (overlap, len(coords))
            stats = ReadStats()
            for _ in iter_patches_from_bands(slide, coords, patch_level=0, patch_size=256,
                                             stats=stats):
                pass
            # decoded bytes ~ the ROI (+ one patch) whatever the overlap
            assert stats.bytes_decoded <= 1.3 * (600 + 256) ** 2 * 3, overlap


@pytest.mark.shared
def test_tcga_level1_non_integer_downsample(slides_dir: Path) -> None:
    """d = 2.0005: exact mode reads patch by patch (OpenSlide resamples every fractional
    location), approximate mode cuts bands within a sub-pixel shift."""
    with open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs") as slide:
        d = level_downsample(slide, 1)
        assert 2.0 < d < 2.001
        step0 = dense_step(128, 0.9) * 2
        coords = _grid(4200, 3300, 4443, 3567, step0)     # off the right and bottom edges
        stats = _check_exact(slide, coords, level=1, size=128)
        assert stats.single_reads == stats.regions == len(coords)
        approx = ReadStats()
        diffs = []
        for idx, patches in iter_patches_from_bands(slide, coords, patch_level=1, patch_size=128,
                                                    exact=False, stats=approx):
            for i, win in zip(idx, patches):
                ref = slide.read_region(tuple(coords[i]), 1, (128, 128))
                diffs.append(np.abs(ref.astype(int) - win).mean())
        assert approx.regions == 1 and max(diffs) < 6.0


@pytest.mark.shared
def test_ndpi_level2_odd_step_phases_are_exact(slides_dir: Path) -> None:
    """d = 4 with a level-0 step of 25: 16 phase groups, each read in bands, all exact."""
    with open_slide(slides_dir / "slideio_test3-DAPI-2-387.ndpi") as slide:
        coords = _grid(3701, 4603, 3968, 4864, 25)       # off the right and bottom edges
        stats = _check_exact(slide, coords, level=2, size=48)
    assert stats.regions == 16 and stats.single_reads == 0
