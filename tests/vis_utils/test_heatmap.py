"""render_heatmap against the per-patch loop oracle (tests/vis_utils/clam_oracle.py), on small
in-memory slides: pixel-equal for every option CLAM has."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from vis_utils import raster as hm_bands
from vis_utils.heatmap import HeatmapStyle, colour_layer, read_canvas, render_heatmap, render_on_canvas
from wsi_core.errors import ConfigError, FeatureFileError, RoiError
from wsi_core.tissue import TissueContours

from .clam_oracle import FakeSlide, clam_heatmap


def _ellipse(cx, cy, ax, ay, step=7):
    pts = cv2.ellipse2Poly((cx, cy), (ax, ay), 0, 0, 360, step)
    return pts.reshape(-1, 1, 2).astype(np.int32)


def _image(w, h, seed):
    """Gradients plus noise, (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    img[..., 0] += (np.arange(w) * 215 // w).astype(np.uint8)[None, :]
    img[..., 1] += (np.arange(h) * 215 // h).astype(np.uint8)[:, None]
    return img


@pytest.fixture(scope="module")
def small():
    """Level 0 1300x1100 (2 x 2 CLAM blocks), level 1 433x366 (downsample 3.002 / 3.005)."""
    slide = FakeSlide(_image(1300, 1100, 0), [(433, 366)], slide_id="small")
    contours = TissueContours(
        tissue=[_ellipse(650, 550, 560, 460), _ellipse(650, 560, 90, 70)],
        holes=[[_ellipse(640, 560, 150, 120), _ellipse(300, 300, 60, 40)], []],
    )
    return slide, contours


@pytest.fixture(scope="module")
def big_level1():
    """Level 1 of 1040x1030 px at downsample 3.0010 / 3.0010 -> 2 x 2 blocks, shifted reads."""
    slide = FakeSlide(_image(3121, 3091, 1), [(1040, 1030)], slide_id="big")
    contours = TissueContours(tissue=[_ellipse(1560, 1545, 1400, 1350, step=3)],
                              holes=[[_ellipse(1500, 1500, 300, 200)]])
    return slide, contours


def _patches(w0, h0, patch, step, seed, jitter=True):
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(0, w0 - patch // 2, step), np.arange(0, h0 - patch // 2, step))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    if jitter:  # some off-grid patches, a few hanging over the right/bottom edge
        extra = np.stack([rng.integers(0, w0 - 10, 25), rng.integers(0, h0 - 10, 25)], axis=1)
        coords = np.vstack([coords, extra])
    scores = rng.integers(0, 101, len(coords)).astype(np.float32)  # percentiles with ties
    return scores.reshape(-1, 1), coords


CASES = {
    "plain": dict(),
    "overlap_raw_float64": dict(convert=True, scores_dtype=np.float64),
    "binarize_auto": dict(style=dict(binarize=True)),
    "binarize_thresh": dict(style=dict(binarize=True, binary_thresh=0.5)),
    "blur": dict(style=dict(blur=True, overlap=0.5)),
    "blur_binarize_blank": dict(style=dict(blur=True, overlap=0.75, binarize=True, blank_canvas=True)),
    "blank": dict(style=dict(blank_canvas=True, cmap="coolwarm")),
    "no_holes": dict(style=dict(use_holes=False)),
    "no_segment_alpha1": dict(style=dict(segment=False, alpha=1.0)),
    "custom_downsample": dict(style=dict(custom_downsample=3)),
    "alpha0": dict(style=dict(alpha=0.0)),
}


@pytest.mark.parametrize(("name", "level"), [(n, lv) for n in sorted(CASES) for lv in (0, 1)
                                             if not (lv == 0 and "blur" in n)])  # big kernels: slow
def test_matches_loop_oracle(small, name, level):
    slide, contours = small
    case = CASES[name]
    scores, coords = _patches(1300, 1100, 200, 100, seed=level)
    if "scores_dtype" in case:
        scores = np.random.default_rng(5).normal(size=len(scores)).astype(case["scores_dtype"])
    style = HeatmapStyle(**case.get("style", {}))
    kw = dict(patch_size_level0=(200, 200), vis_level=level, contours=contours, style=style,
              convert_to_percentiles=case.get("convert", False))
    ours = render_heatmap(slide, scores, coords, **kw)
    want = clam_heatmap(slide, scores, coords, base_from_blocks=True, **kw)
    assert ours.shape == want.shape and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, want)


@pytest.mark.parametrize("roi", [(200, 150, 1000, 900), (333, 101, 1297, 1099)])
@pytest.mark.parametrize("level", [0, 1])
def test_roi_matches_oracle(small, roi, level):
    slide, contours = small
    scores, coords = _patches(1300, 1100, 200, 100, seed=3)
    coords = np.vstack([coords, [roi[:2], roi[2:]]])  # exactly on both corners: kept (inclusive)
    scores = np.vstack([scores, [[100.0], [50.0]]]).astype(np.float32)
    kw = dict(patch_size_level0=(200, 200), vis_level=level, contours=contours,
              style=HeatmapStyle(), convert_to_percentiles=True, roi=roi)
    ours = render_heatmap(slide, scores, coords, **kw)
    want = clam_heatmap(slide, scores, coords, base_from_blocks=True, **kw)
    np.testing.assert_array_equal(ours, want)
    sx, sy = (1 / d for d in slide.level_downsamples[level])
    assert ours.shape[:2] == (int(roi[3] * sy) - int(roi[1] * sy), int(roi[2] * sx) - int(roi[0] * sx))


@pytest.mark.parametrize("blur", [False, True])
def test_non_integer_downsample_blocks(big_level1, blur):
    """Level 1 at downsample 3.001: CLAM's blend blocks start at level-0 x = 3072, read at level
    px 1023 instead of 1024. With our read-once canvas the whole image equals the loop oracle that
    uses the same block canvas; against CLAM's exact double read the coloured pixels are equal."""
    slide, contours = big_level1
    scores, coords = _patches(3121, 3091, 256, 128, seed=7)
    style = HeatmapStyle(blur=blur, overlap=0.5)
    kw = dict(patch_size_level0=(256, 256), vis_level=1, contours=contours, style=style,
              convert_to_percentiles=False)
    ours = render_heatmap(slide, scores, coords, **kw)
    np.testing.assert_array_equal(ours, clam_heatmap(slide, scores, coords, base_from_blocks=True, **kw))
    if not blur:
        clam = clam_heatmap(slide, scores, coords, **kw)
        canvas = read_canvas(slide, vis_level=1, top_left=(0, 0), region_size=(1040, 1030))
        single = slide.read_region((0, 0), 1, (1040, 1030))
        assert not np.array_equal(canvas, single)  # the shift is real
        coloured = np.any(ours != canvas, axis=2)
        assert coloured.mean() > 0.3
        np.testing.assert_array_equal(ours[coloured], clam[coloured])


def test_bands_and_halo_are_seamless(small, monkeypatch):
    """Row bands of 37 px (with blur halos) give the same image as one band."""
    slide, contours = small
    scores, coords = _patches(1300, 1100, 200, 50, seed=11)
    for style in (HeatmapStyle(), HeatmapStyle(blur=True, overlap=0.75)):
        kw = dict(patch_size_level0=(200, 200), vis_level=0, contours=contours, style=style,
                  convert_to_percentiles=False)
        whole = render_heatmap(slide, scores, coords, **kw)
        monkeypatch.setattr(hm_bands, "BAND_PIXELS", 1300 * 37)
        banded = render_heatmap(slide, scores, coords, **kw)
        monkeypatch.undo()
        np.testing.assert_array_equal(whole, banded)


def test_negative_raw_scores_count_but_do_not_colour(small):
    slide, contours = small
    coords = np.array([[100, 100], [200, 100]])
    scores = np.array([-50.0, 80.0])
    style = HeatmapStyle(segment=False, alpha=1.0, blank_canvas=True)
    out = render_heatmap(slide, scores, coords, patch_size_level0=(200, 200), vis_level=0,
                         contours=None, style=style, convert_to_percentiles=False)
    want = clam_heatmap(slide, scores, coords, patch_size_level0=(200, 200), vis_level=0,
                        contours=None, style=style, convert_to_percentiles=False)
    np.testing.assert_array_equal(out, want)
    assert (out[150, 150] == 255).all()        # only the negative patch: white
    assert not (out[150, 250] == 255).all()    # overlap of both: mean 0.4 coloured


def test_best_level_and_exact_fractions(small):
    slide, _ = small
    coords = np.array([[0, 0], [100, 0]])
    scores = np.array([50.0, 25.0], dtype=np.float32)
    style = HeatmapStyle(segment=False, alpha=1.0, blank_canvas=True)
    out = render_heatmap(slide, scores, coords, patch_size_level0=(200, 200), vis_level=-1,
                         contours=None, style=style, convert_to_percentiles=False)
    assert out.shape == (366, 433, 3)  # level 1 is the best level for downsample 32
    lut = hm_bands.colormap_lut("jet")
    # pixel covered by both: mean 0.375 -> index int(0.375 * 256) = 96 exactly
    assert (out[10, 40] == lut[96]).all() and (out[10, 10] == lut[128]).all()


def test_read_canvas_block_origins(big_level1):
    slide, _ = big_level1
    slide.reads.clear()
    read_canvas(slide, vis_level=1, top_left=(10, 20), region_size=(1040, 1030))
    assert slide.reads == [((10, 20), 1, (1024, 1024)), ((10, 3092), 1, (1024, 6)),
                           ((3082, 20), 1, (16, 1024)), ((3082, 3092), 1, (16, 6))]


def test_read_canvas_integer_downsample_equals_single_read(small):
    slide, _ = small
    canvas = read_canvas(slide, vis_level=0, top_left=(0, 0), region_size=(1300, 1100))
    np.testing.assert_array_equal(canvas, slide.read_region((0, 0), 0, (1300, 1100)))


def test_errors_name_the_problem(small):
    slide, contours = small
    kw = dict(patch_size_level0=(200, 200), vis_level=0, contours=contours,
              style=HeatmapStyle(), convert_to_percentiles=False)
    with pytest.raises(FeatureFileError, match="small: scores .* and coords .* do not match"):
        render_heatmap(slide, np.ones(3), np.zeros((4, 2)), **kw)
    with pytest.raises(FeatureFileError, match="NaN/Inf"):
        render_heatmap(slide, np.array([np.nan]), np.zeros((1, 2)), **kw)
    with pytest.raises(RoiError, match=r"small: ROI \(x1=500, y1=10, x2=400, y2=900\) is empty"):
        render_heatmap(slide, np.ones(1), np.zeros((1, 2)), roi=(500, 10, 400, 900), **kw)
    with pytest.raises(ConfigError, match="vis_level 5 does not exist"):
        render_heatmap(slide, np.ones(1), np.zeros((1, 2)), **{**kw, "vis_level": 5})
    with pytest.raises(ConfigError, match="unknown colormap 'nope'"):
        render_heatmap(slide, np.ones(1), np.zeros((1, 2)), **{**kw, "style": HeatmapStyle(cmap="nope")})
    with pytest.raises(ConfigError, match="alpha must be in"):
        HeatmapStyle(alpha=1.5)


def test_style_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        HeatmapStyle().alpha = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("alpha", [0.4, 1.0])
def test_colour_layer_blends_to_render_on_canvas(alpha):
    """A colour layer blended onto a canvas (whole, or window by window) is render_on_canvas."""
    rng = np.random.default_rng(3)
    h, w = 300, 420
    canvas = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    coords = rng.integers(-20, 400, (500, 2))
    scores = rng.random(500)
    tissue = np.zeros((h, w), bool)
    tissue[30:250, 50:380] = True
    style = HeatmapStyle(alpha=alpha, cmap="coolwarm")
    ref = render_on_canvas(canvas, scores, coords, patch_size=(37, 29), threshold=0.2, style=style, tissue=tissue)
    layer = colour_layer((w, h), scores, coords, patch_size=(37, 29), threshold=0.2, style=style, tissue=tissue)
    np.testing.assert_array_equal(layer.blend(canvas.copy(), alpha), ref)
    for x, y in ((0, 0), (123, 77), (400, 280)):
        win = canvas[y:y + 64, x:x + 64].copy()
        np.testing.assert_array_equal(layer.blend(win, alpha, (x, y)), ref[y:y + 64, x:x + 64])
    assert layer.nbytes == h * w * 4
    with pytest.raises(ValueError, match="blur"):
        colour_layer((w, h), scores, coords, patch_size=(37, 29), threshold=0.2,
                     style=HeatmapStyle(blur=True), tissue=None)


def test_render_heatmap_takes_a_canvas_already_read(small):
    """A caller that read the level already (the picture writers share one read) gets the same
    pixels; a canvas of the wrong size is refused."""
    slide, contours = small
    scores, coords = _patches(1300, 1100, 128, 64, seed=5)
    kw = dict(patch_size_level0=(128, 128), vis_level=0, contours=contours, style=HeatmapStyle(alpha=0.4),
              convert_to_percentiles=True)
    w, h = slide.level_dimensions[0]
    canvas = read_canvas(slide, vis_level=0, top_left=(0, 0), region_size=(w, h))
    before = canvas.copy()
    np.testing.assert_array_equal(render_heatmap(slide, scores, coords, canvas=canvas, **kw),
                                  render_heatmap(slide, scores, coords, **kw))
    np.testing.assert_array_equal(canvas, before)                  # not modified
    with pytest.raises(ValueError, match="is not the"):
        render_heatmap(slide, scores, coords, canvas=canvas[:-1], **kw)
