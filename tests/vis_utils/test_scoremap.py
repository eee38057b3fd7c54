"""render_score_map against a per-patch loop oracle written here, on small in-memory slides."""
from __future__ import annotations

import math

import cv2
import matplotlib
import numpy as np
import pytest
from PIL import Image

from vis_utils import raster as hm_bands
from vis_utils.normalize import fit_scale
from vis_utils.scoremap import render_score_map
from wsi_core.errors import ConfigError, RoiError
from wsi_core.tissue import TissueContours

from .clam_oracle import FakeSlide

CMAP = "coolwarm"


def _ellipse(cx, cy, ax, ay):
    return cv2.ellipse2Poly((cx, cy), (ax, ay), 0, 0, 360, 7).reshape(-1, 1, 2).astype(np.int32)


@pytest.fixture(scope="module")
def slide():
    """Level 0 640x480, level 1 320x240 (downsample 2): pink tissue on a white background with
    a white stripe (brightness 250) across it for the mask_threshold test."""
    img = np.full((480, 640, 3), 255, np.uint8)
    rng = np.random.default_rng(0)
    tissue = np.zeros((480, 640), np.uint8)
    cv2.ellipse(tissue, (320, 240), (280, 200), 0, 0, 360, 1, -1)
    noise = rng.integers(0, 30, (480, 640, 3), dtype=np.uint8)
    img[tissue == 1] = (np.array([200, 110, 170], np.uint8) + noise)[tissue == 1]
    img[200:232, :] = 250
    return FakeSlide(img, [(320, 240)], slide_id="tiny")


@pytest.fixture(scope="module")
def contours():
    return TissueContours(tissue=[_ellipse(320, 240, 290, 210)], holes=[[_ellipse(450, 300, 50, 40)]])


def _bag(seed: int, n_extra: int = 15):
    """Overlapping 96-px patches (step 48) plus random off-grid ones; dyadic values so the
    fixed-point means equal the float64 means exactly."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(0, 600, 48), np.arange(0, 440, 48))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    coords = np.vstack([coords, rng.integers(0, 620, (n_extra, 2)) * [1, 0.75]]).astype(np.int64)
    values = rng.integers(0, 65, len(coords)) / 64.0
    shade = rng.integers(0, 17, len(coords)) / 16.0
    return values, shade, coords


def oracle(slide, values, coords, *, patch, vis_level, contours, cmap, alpha, shade=None, roi=None,
           mask_threshold=None):
    """The obviously-correct loop: accumulate every patch into float64 canvases, mean, colour each
    pixel through matplotlib, blend (addWeighted, or rint(colour * w + slide * (1 - w)))."""
    img = slide.levels[vis_level]
    dsx, dsy = slide.level_downsamples[vis_level]
    sx, sy = 1 / dsx, 1 / dsy
    tl = (0, 0) if roi is None else roi[:2]
    if roi is not None:
        keep = [i for i, (x, y) in enumerate(coords) if roi[0] <= x <= roi[2] and roi[1] <= y <= roi[3]]
        values, coords = values[keep], coords[keep] - np.array(tl)
        shade = None if shade is None else shade[keep]
        x0, y0 = int(roi[0] * sx), int(roi[1] * sy)
        img = img[y0:int(roi[3] * sy), x0:int(roi[2] * sx)]
    h, w = img.shape[:2]
    pw, ph = math.ceil(patch * sx), math.ceil(patch * sy)
    total, count, shades = np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w))
    for i, (x, y) in enumerate(coords):
        x, y = math.ceil(x * sx), math.ceil(y * sy)
        total[y:y + ph, x:x + pw] += values[i]
        count[y:y + ph, x:x + pw] += 1
        if shade is not None:
            shades[y:y + ph, x:x + pw] += shade[i]
    covered = count > 0
    mean = np.where(covered, total / np.maximum(count, 1), 0.0)
    cm = matplotlib.colormaps[cmap]
    colour = (cm(np.clip((mean * cm.N).astype(int), 0, cm.N - 1)) * 255)[..., :3].astype(np.uint8)
    mask = covered.copy()
    if contours is not None:
        tmask = np.zeros((h, w), np.uint8)
        off = (int(-tl[0] * sx), int(-tl[1] * sy))
        for cont, holes in zip(contours.tissue, contours.holes):
            cv2.drawContours(tmask, [(cont * [sx, sy]).astype(np.int32)], 0, 1, -1, offset=off)
            cv2.drawContours(tmask, [(hc * [sx, sy]).astype(np.int32) for hc in holes], -1, 0, -1, offset=off)
        mask &= tmask.astype(bool)
    if mask_threshold is not None:
        mask &= np.asarray(Image.fromarray(img).convert("L")) < mask_threshold
    if shade is None:
        blended = cv2.addWeighted(colour, alpha, img, 1 - alpha, 0)
    else:
        wgt = (alpha * np.where(covered, shades / np.maximum(count, 1), 0.0)).astype(np.float32)[..., None]
        blended = np.rint(colour * wgt + img.astype(np.float32) * (np.float32(1) - wgt)).astype(np.uint8)
    out = img.copy()
    out[mask] = blended[mask]
    return out


CASES = {
    "plain": dict(alpha=0.5),
    "shaded": dict(alpha=0.75, shade=True),
    "shaded_alpha1_mask": dict(alpha=1.0, shade=True, mask_threshold=224),
    "no_contours_mask": dict(alpha=0.5, contours=False, mask_threshold=224),
    "alpha1": dict(alpha=1.0),
}


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_loop_oracle(slide, contours, name, level):
    case = dict(CASES[name])
    values, shade, coords = _bag(seed=level)
    kw = dict(patch_size_level0=(96, 96), vis_level=level, cmap=CMAP, alpha=case["alpha"],
              contours=None if case.get("contours") is False else contours,
              shade=shade if case.get("shade") else None, mask_threshold=case.get("mask_threshold"))
    ours = render_score_map(slide, values, coords, **kw)
    want = oracle(slide, values, coords, patch=96, **{k: v for k, v in kw.items() if k != "patch_size_level0"})
    assert ours.shape == want.shape == (*slide.levels[level].shape[:2], 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, want)
    assert not np.array_equal(ours, slide.levels[level])   # something was drawn


@pytest.mark.parametrize("shaded", [False, True])
def test_roi_matches_oracle(slide, contours, shaded):
    values, shade, coords = _bag(seed=4)
    roi = (96, 48, 530, 410)
    kw = dict(vis_level=1, cmap=CMAP, alpha=0.6, contours=contours, roi=roi,
              shade=shade if shaded else None, mask_threshold=240)
    ours = render_score_map(slide, values, coords, patch_size_level0=(96, 96), **kw)
    np.testing.assert_array_equal(ours, oracle(slide, values, coords, patch=96, **kw))


def test_bands_are_seamless(slide, contours, monkeypatch):
    values, shade, coords = _bag(seed=2)
    kw = dict(patch_size_level0=(96, 96), vis_level=0, contours=contours, cmap=CMAP, alpha=0.8, shade=shade)
    whole = render_score_map(slide, values, coords, **kw)
    monkeypatch.setattr(hm_bands, "BAND_PIXELS", 640 * 29)
    np.testing.assert_array_equal(whole, render_score_map(slide, values, coords, **kw))


def test_identical_scores_identical_colours_across_slides(slide):
    """One raw score on two slides: the same colour under the run scale, different colours under
    per-slide scales (single non-overlapping patches, alpha 1, no blending)."""
    a = np.array([-2.0, -1.0, 0.0, 0.5])
    b = np.array([0.5, 2.0, 3.0, 4.0])
    coords = np.array([[0, 0], [128, 0], [256, 0], [384, 0]], np.int64)
    run = fit_scale([a, b])
    kw = dict(patch_size_level0=(128, 128), vis_level=0, contours=None, cmap="magma", alpha=1.0)
    img_a = render_score_map(slide, run.apply(a), coords, **kw)
    img_b = render_score_map(slide, run.apply(b), coords, **kw)
    np.testing.assert_array_equal(img_a[64, 384 + 64], img_b[64, 64])            # score 0.5 on both
    own_a = render_score_map(slide, fit_scale([a]).apply(a), coords, **kw)
    own_b = render_score_map(slide, fit_scale([b]).apply(b), coords, **kw)
    assert not np.array_equal(own_a[64, 384 + 64], own_b[64, 64])


def test_shade_zero_leaves_the_slide(slide, contours):
    values, _, coords = _bag(seed=3)
    out = render_score_map(slide, values, coords, patch_size_level0=(96, 96), vis_level=1, contours=contours,
                           cmap=CMAP, alpha=1.0, shade=np.zeros(len(values)))
    np.testing.assert_array_equal(out, slide.levels[1])


def test_bad_inputs(slide):
    values, shade, coords = _bag(seed=0)
    kw = dict(patch_size_level0=(96, 96), vis_level=0, contours=None, cmap=CMAP, alpha=0.5)
    with pytest.raises(ValueError, match=r"tiny: score-map values must be finite and in \[0, 1\]; scale them"):
        render_score_map(slide, values * 3, coords, **kw)
    with pytest.raises(ValueError, match=r"tiny: score-map values \(\d+,\) and coords \(3, 2\) do not match"):
        render_score_map(slide, values, coords[:3], **kw)
    with pytest.raises(ValueError, match=r"shade must be"):
        render_score_map(slide, values, coords, shade=shade[:-1], **kw)
    with pytest.raises(ConfigError, match=r"heatmap_arguments\.score_alpha must be in \[0, 1\], got 2"):
        render_score_map(slide, values, coords, **{**kw, "alpha": 2})
    with pytest.raises(ConfigError, match=r"tiny: vis_level 5 does not exist .*heatmap_arguments\.vis_level"):
        render_score_map(slide, values, coords, **{**kw, "vis_level": 5})
    with pytest.raises(ConfigError, match=r"unknown colormap 'hot_nope' in heatmap_arguments"):
        render_score_map(slide, values, coords, **{**kw, "cmap": "hot_nope"})
    with pytest.raises(RoiError, match="ROI"):
        render_score_map(slide, values, coords, roi=(700, 0, 800, 100), **kw)
