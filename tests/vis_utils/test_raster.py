"""Pieces of the rasteriser: colour index rule, tissue mask, exact fixed-point means."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from vis_utils.raster import (
    band_heights, build_cells, cell_means, cell_stats, colormap_lut, expand_cells, lut_indices,
    tissue_mask,
)
from wsi_core.tissue import TissueContours


@pytest.mark.parametrize("name", ["jet", "coolwarm", "viridis"])
def test_lut_matches_matplotlib(name):
    cmap = matplotlib.colormaps[name]
    v = np.array([-3.0, -1e-12, 0.0, 1e-9, 0.2, 0.5, 0.999999, 1.0, 1.0 + 1e-12, 7.0])
    v = np.concatenate([v, np.random.default_rng(0).random(1000)])
    lut = colormap_lut(name)
    want = (cmap(v) * 255)[:, :3].astype(np.uint8)
    np.testing.assert_array_equal(lut[lut_indices(v, len(lut))], want)


def _square(x0, y0, x1, y1):
    return np.array([[[x0, y0]], [[x1, y0]], [[x1, y1]], [[x0, y1]]], dtype=np.int32)


def test_tissue_mask_order_holes_and_offset():
    big, hole, island = _square(0, 0, 99, 99), _square(20, 20, 79, 79), _square(40, 40, 59, 59)
    # island listed first: CLAM draws the larger contour (and its holes) first, so it survives
    cont = TissueContours(tissue=[island, big], holes=[[], [hole]])
    m = tissue_mask(cont, region_size=(100, 100), scale=(1.0, 1.0), top_left=(0, 0), use_holes=True)
    assert m[10, 10] and not m[30, 30] and m[50, 50]
    m = tissue_mask(cont, region_size=(100, 100), scale=(1.0, 1.0), top_left=(0, 0), use_holes=False)
    assert m[30, 30]
    # ROI offset and scaling: level-0 (40, 40) at scale 0.5 with the canvas starting at (20, 20)
    m = tissue_mask(cont, region_size=(45, 45), scale=(0.5, 0.5), top_left=(20, 20), use_holes=True)
    assert m[15, 15] and not m[5, 5] and m[35, 35] and not m[42, 42]  # hole 0..29, big ..39


def test_fixed_point_means_are_exact():
    x0 = np.array([0, 2, 4])
    vals = np.array([0.5, 0.25, 0.125])
    cells = build_cells(x0, np.zeros(3, int), (4, 2), (10, 2), vals, np.ones(3, bool))
    sums, counts, above = cell_stats(cells, 0, len(cells.ys) - 1)
    means = cell_means(sums, counts, cells.bits, binarize=False)
    px = expand_cells(means, band_heights(cells, 0, len(cells.ys) - 1, 0, 2), cells.widths)
    np.testing.assert_array_equal(px[0], [0.5, 0.5, 0.375, 0.375, 0.1875, 0.1875, 0.125, 0.125, 0, 0])
    assert px.shape == (2, 10)
    np.testing.assert_array_equal(expand_cells(counts, [2], cells.widths)[0], [1, 1, 2, 2, 2, 2, 1, 1, 0, 0])


def test_huge_scores_do_not_overflow():
    vals = np.full(1000, 3e9)
    cells = build_cells(np.zeros(1000, int), np.zeros(1000, int), (2, 2), (2, 2), vals,
                        np.ones(1000, bool))
    sums, counts, _ = cell_stats(cells, 0, 1)
    assert cells.bits < 32
    np.testing.assert_allclose(cell_means(sums, counts, cells.bits, binarize=False), 3e9, rtol=1e-12)
