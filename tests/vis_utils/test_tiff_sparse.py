"""Heatmap TIFFs with empty background tiles (``empty_background``): tiles without heatmap colour
are stored with TileByteCounts 0 and read back through OpenSlide as transparent; the tiles with
colour keep render_heatmap's pixels exactly (lossless deflate); the slide is not read there."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import openslide
import pytest
import tifffile

from vis_utils.heatmap import HeatmapStyle, plan_heatmap, read_canvas, render_heatmap
from vis_utils.tiff import tile_grid_levels, write_pyramidal_tiff
from vis_utils.tiled import content_tile_grid, render_heatmap_tiff
from wsi_core.tissue import TissueContours

from .clam_oracle import FakeSlide

TILE = 256


def _image(w: int, h: int) -> np.ndarray:
    """A textured slide: gradients plus noise (every pixel differs from white)."""
    y, x = np.mgrid[:h, :w]
    rng = np.random.default_rng(5)
    img = np.stack([x * 200 // w + 20, y * 200 // h + 20, np.full_like(x, 180)], axis=-1)
    return np.clip(img + rng.integers(-15, 16, img.shape), 0, 255).astype(np.uint8)


def _case(w0=2600, h0=2100, sizes=((866, 700),)):
    """Tissue: an ellipse in the upper left plus a small disc at the lower right; patches (256 px,
    step 128) only over them, so most 256-px tiles of the slide are background."""
    slide = FakeSlide(_image(w0, h0), list(sizes), slide_id="sparse")
    ell = cv2.ellipse2Poly((800, 700), (600, 450), 20, 0, 360, 3).reshape(-1, 1, 2).astype(np.int32)
    disc = cv2.ellipse2Poly((2150, 1700), (250, 230), 0, 0, 360, 5).reshape(-1, 1, 2).astype(np.int32)
    contours = TissueContours(tissue=[ell, disc], holes=[[], []])
    mask = np.zeros((h0, w0), np.uint8)
    cv2.fillPoly(mask, [ell.reshape(-1, 2), disc.reshape(-1, 2)], 1)
    xs, ys = np.meshgrid(np.arange(0, w0 - 128, 128), np.arange(0, h0 - 128, 128))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    coords = coords[mask[np.minimum(coords[:, 1] + 128, h0 - 1), np.minimum(coords[:, 0] + 128, w0 - 1)] > 0]
    scores = np.random.default_rng(1).random(len(coords)).astype(np.float32)
    return slide, contours, coords, scores


def _rgba(path, level=0) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as osr:
        return np.asarray(osr.read_region((0, 0), level, osr.level_dimensions[level]))


def _counts(path, page=0) -> np.ndarray:
    with tifffile.TiffFile(path) as tf:
        p = tf.pages[page]
        return np.array(p.databytecounts).reshape(-(-p.imagelength // TILE), -(-p.imagewidth // TILE))


def _tiles_px(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: the pixels of the marked tiles."""
    return np.kron(grid, np.ones((TILE, TILE), bool))[:shape[0], :shape[1]]


@pytest.mark.parametrize("level,style", [
    (0, HeatmapStyle(alpha=0.4, overlap=0.5)),
    (1, HeatmapStyle(alpha=0.4, overlap=0.5)),
    (0, HeatmapStyle(alpha=0.5, overlap=0.9, blur=True)),
    (0, HeatmapStyle(alpha=1.0, binarize=True, binary_thresh=0.5, cmap="coolwarm")),
], ids=["level0", "level1-noninteger", "blur", "alpha1-binarize"])
def test_background_tiles_empty_and_transparent_tissue_tiles_exact(tmp_path, level, style):
    slide, contours, coords, scores = _case()
    kw = dict(patch_size_level0=(256, 256), vis_level=level, contours=contours, style=style,
              convert_to_percentiles=True)
    ref = render_heatmap(slide, scores, coords, **kw)
    res = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "h.tif", compression="deflate",
                              band_rows=300, min_size=200, empty_background=True)
    grid = content_tile_grid(plan_heatmap(slide, scores, coords, **{k: v for k, v in kw.items() if k != "contours"}),
                             contours, style, tile=TILE)
    counts = _counts(res.heatmap)
    assert np.array_equal(counts > 0, grid)                       # the empty tiles are zero-byte
    assert 0.1 < grid.mean() < 0.8, grid.mean()                   # both kinds are there
    rgba = _rgba(res.heatmap)
    written = _tiles_px(grid, ref.shape[:2])
    assert (rgba[~written, 3] == 0).all()                         # transparent in OpenSlide >= 4
    assert (rgba[written, 3] == 255).all()
    assert np.array_equal(rgba[written][:, :3], ref[written])     # tissue tiles keep their pixels
    # no heatmap colour is lost: every pixel that differs from the plain slide is in a written tile
    if not style.blur:
        w, h = slide.level_dimensions[level]
        plain = read_canvas(slide, vis_level=level, top_left=(0, 0), region_size=(w, h))
        assert not (ref != plain).any(axis=-1)[~written].any()
    # a tile of the next level is written iff a level-0 tile under it is
    with tifffile.TiffFile(res.heatmap) as tf:
        p1 = tf.pages[1]
        g1 = tile_grid_levels(grid, [grid.shape[::-1], (-(-p1.imagewidth // TILE), -(-p1.imagelength // TILE))])[1]
    assert np.array_equal(_counts(res.heatmap, 1) > 0, g1)
    assert "tiles without heatmap colour stored empty" in tifffile.TiffFile(res.heatmap).pages[0].description


def test_background_is_not_read_from_the_slide(tmp_path):
    """Tissue in one corner of a 4500 x 2100 slide: only its tiles are read from the slide."""
    slide = FakeSlide(_image(4500, 2100), [], slide_id="corner")
    disc = cv2.ellipse2Poly((700, 600), (400, 350), 0, 0, 360, 5).reshape(-1, 1, 2).astype(np.int32)
    xs, ys = np.meshgrid(np.arange(300, 1000, 128), np.arange(250, 850, 128))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    scores = np.random.default_rng(2).random(len(coords)).astype(np.float32)
    kw = dict(patch_size_level0=(256, 256), vis_level=0, contours=TissueContours([disc], [[]]),
              style=HeatmapStyle(alpha=0.4), convert_to_percentiles=True, out_path=tmp_path / "h.tif")
    render_heatmap_tiff(slide, scores, coords, **kw)
    dense = sum(w * h for _, _, (w, h) in slide.reads)
    slide.reads.clear()
    render_heatmap_tiff(slide, scores, coords, **kw, empty_background=True)
    sparse = sum(w * h for _, _, (w, h) in slide.reads)
    with tifffile.TiffFile(tmp_path / "h.tif") as tf:
        marked = np.array(tf.pages[0].databytecounts) > 0
    assert marked.sum() == 16                                  # 4 x 4 tiles of 256 px with colour
    # level 0 (integer downsample): exactly those tiles are read, not the CLAM blocks around them
    assert dense == 4500 * 2100 and sparse == 16 * 256 * 256, (dense, sparse)


def test_jpeg_tissue_tiles_are_the_dense_files_tiles(tmp_path):
    """JPEG: each written tile holds the very bytes of the same tile in the dense TIFF (same pixels,
    same encoder); the other tiles are zero-byte and transparent."""
    slide, contours, coords, scores = _case()
    kw = dict(patch_size_level0=(256, 256), vis_level=0, contours=contours,
              style=HeatmapStyle(alpha=0.4), convert_to_percentiles=True)
    sparse = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "s.tiff", empty_background=True)
    dense = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "d.tiff")

    def tiles(path):
        with tifffile.TiffFile(path) as tf:
            p = tf.pages[0]
            raw = path.read_bytes()
            return [raw[o:o + n] for o, n in zip(p.dataoffsets, p.databytecounts)]

    s_tiles, d_tiles = tiles(sparse.heatmap), tiles(dense.heatmap)
    written = [i for i, t in enumerate(s_tiles) if t]
    assert 0 < len(written) < len(s_tiles)
    assert all(s_tiles[i] == d_tiles[i] for i in written)
    rgba = _rgba(sparse.heatmap)
    px = _tiles_px(_counts(sparse.heatmap) > 0, rgba.shape[:2])
    assert (rgba[~px, 3] == 0).all() and (rgba[px, 3] == 255).all()


def test_roi_with_empty_background(tmp_path):
    """An ROI off the tile grid: tiles outside the ROI and background tiles inside it are empty,
    the ROI's coloured pixels sit in their place exactly."""
    slide, contours, coords, scores = _case()
    roi = (300, 170, 2400, 1950)
    kw = dict(patch_size_level0=(256, 256), vis_level=0, contours=contours,
              style=HeatmapStyle(alpha=0.5, overlap=0.5), convert_to_percentiles=True, roi=roi)
    ref = render_heatmap(slide, scores, coords, **kw)
    res = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "r.tif", compression="deflate",
                              band_rows=256, min_size=300, empty_background=True)
    rgba = _rgba(res.heatmap)
    counts = _counts(res.heatmap)
    written = _tiles_px(counts > 0, rgba.shape[:2])
    assert (rgba[~written, 3] == 0).all()
    h, w = ref.shape[:2]
    inside = written[170:170 + h, 300:300 + w]
    assert 0.1 < inside.mean() < 0.9
    assert np.array_equal(rgba[170:170 + h, 300:300 + w][inside][:, :3], ref[inside])
    dense = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "d.tif", compression="deflate",
                                band_rows=256, min_size=300, raw_scores=tmp_path / "d_scores.tif")
    assert ((_counts(dense.heatmap) > 0) >= (counts > 0)).all() and (_counts(dense.heatmap) > 0).sum() > (counts > 0).sum()
    # the raw score map is not masked by tissue: the same file with or without empty background tiles
    again = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "e.tif", compression="deflate",
                                band_rows=256, min_size=300, raw_scores=tmp_path / "e_scores.tif", empty_background=True)
    assert again.scores.read_bytes() == dense.scores.read_bytes()


def test_content_tiles_none_band_and_bad_grid(tmp_path):
    img = np.full((600, 700, 3), 255, np.uint8)
    img[300:400, 260:500] = (10, 200, 30)
    grid = np.zeros((3, 3), bool)
    grid[1, 1] = True
    out = write_pyramidal_tiff(tmp_path / "g.tif", lambda a, b: None if b <= 256 else img[a:b], size=(700, 600),
                               mpp=None, compression="deflate", band_rows=256, min_size=100, content_tiles=grid)
    assert np.array_equal(_counts(out) > 0, grid)
    rgba = _rgba(out)
    assert np.array_equal(rgba[256:512, 256:512, :3], img[256:512, 256:512]) and rgba[300, 200, 3] == 0
    with pytest.raises(ValueError, match="band rows 256-512 hold content tiles but were given as None"):
        write_pyramidal_tiff(tmp_path / "x.tif", lambda a, b: None, size=(700, 600), mpp=None,
                             band_rows=256, content_tiles=grid)
    with pytest.raises(ValueError, match=r"content_tiles \(2, 3\) is not the \(3, 3\) level-0 tile grid"):
        write_pyramidal_tiff(tmp_path / "x.tif", img, size=(700, 600), mpp=None, content_tiles=grid[:2])


def test_grid_without_segmentation_follows_patches():
    slide, contours, coords, scores = _case()
    style = dataclasses.replace(HeatmapStyle(), segment=False)
    plan = plan_heatmap(slide, scores, coords, patch_size_level0=(256, 256), vis_level=0, style=style,
                        convert_to_percentiles=True)
    grid = content_tile_grid(plan, None, style, tile=TILE)
    cover = np.zeros((2100, 2600), bool)          # the pixels under a patch, drawn one by one
    for x, y in coords:
        cover[y:y + 256, x:x + 256] = True
    expect = np.array([[cover[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE].any()
                        for tx in range(grid.shape[1])] for ty in range(grid.shape[0])])
    assert np.array_equal(grid, expect)
