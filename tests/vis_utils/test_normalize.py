"""Colour scales: shared (run) scales give one colour per score across slides; thresholds squash;
bad thresholds fail with the config key in the message."""
from __future__ import annotations

import numpy as np
import pytest

from vis_utils.normalize import (
    ScoreScale, background_mask, check_mask_threshold, fit_scale, fit_score_scale, fixed_scale,
    percentile_scale, run_scale,
)
from vis_utils.raster import colormap_lut, lut_indices
from wsi_core.errors import ConfigError, FeatureFileError


def _colours(values01: np.ndarray, cmap: str = "magma") -> np.ndarray:
    lut = colormap_lut(cmap)
    return lut[lut_indices(values01, len(lut))]


@pytest.fixture
def two_slides():
    """Slide A's attention runs low, slide B's high; both contain the score 0.75."""
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.normal(-1.0, 0.5, 500), [0.75]]).astype(np.float32)
    b = np.concatenate([rng.normal(2.0, 0.5, 700), [0.75]]).astype(np.float32)
    return a, b


def test_shared_scale_same_colour_per_slide_scales_differ(two_slides):
    a, b = two_slides
    shared, warning = run_scale([a, b], lower=0.01, upper=0.99)
    assert warning is None and shared.source == "run" and shared.n_slides == 2
    assert shared.n_scores == len(a) + len(b)
    ca, cb = _colours(shared.apply(a)), _colours(shared.apply(b))
    np.testing.assert_array_equal(ca[-1], cb[-1])
    own_a, own_b = fit_scale([a], lower=0.01, upper=0.99), fit_scale(b, lower=0.01, upper=0.99)
    assert own_a.source == own_b.source == "slide" and own_a.n_slides == 1
    pa, pb = _colours(own_a.apply(a)), _colours(own_b.apply(b))
    assert not np.array_equal(pa[-1], pb[-1])
    assert own_a.apply(a)[-1] > 0.9 and own_b.apply(b)[-1] < 0.1   # high on A, low on B


def test_quantiles_of_the_concatenation(two_slides):
    a, b = two_slides
    s = fit_scale([a, b], lower=0.05, upper=0.9)
    pooled = np.concatenate([a, b]).astype(np.float64)
    assert s.lo == pytest.approx(np.quantile(pooled, 0.05), abs=0)
    assert s.hi == pytest.approx(np.quantile(pooled, 0.9), abs=0)
    assert (s.kind, s.att_lower_threshold, s.att_upper_threshold) == ("quantile", 0.05, 0.9)


def test_thresholds_squash():
    scores = np.arange(101, dtype=np.float64)      # 0..100
    s = fit_scale([scores], lower=0.1, upper=0.8)
    assert (s.lo, s.hi) == (10.0, 80.0)
    v = s.apply(scores)
    assert v.dtype == np.float64 and v.shape == (101,)
    assert np.all(v[:11] == 0.0) and np.all(v[80:] == 1.0)
    np.testing.assert_allclose(v[10:81], (scores[10:81] - 10) / 70)
    assert np.all(np.diff(v) >= 0)
    np.testing.assert_array_equal(s.apply(scores.reshape(-1, 1)), v)   # (N, 1) accepted


def test_degenerate_equal_scores():
    s = fit_scale([np.full(5, 2.0)], lower=0.0, upper=1.0)
    assert s.lo == s.hi == 2.0
    np.testing.assert_array_equal(s.apply([1.0, 2.0, 3.0]), [0.0, 0.5, 1.0])


def test_single_slide_run_warns_not_fails():
    scale, warning = run_scale([np.arange(10.0), np.zeros(0)], lower=0.0, upper=1.0)
    assert scale.source == "run" and scale.n_slides == 1
    assert "normalize_across_slides" in warning and "only 1 slide" in warning


@pytest.mark.parametrize(("lower", "upper", "words"), [
    (-0.1, 1.0, "heatmap_arguments.att_lower_threshold = -0.1 is not a quantile in [0, 1]"),
    (0.0, 1.5, "heatmap_arguments.att_upper_threshold = 1.5 is not a quantile in [0, 1]"),
    (0.5, 0.5, "heatmap_arguments.att_lower_threshold (0.5) must be below heatmap_arguments.att_upper_threshold (0.5)"),
    (0.9, 0.1, "must be below heatmap_arguments.att_upper_threshold (0.1)"),
    ("0.1", 1.0, "heatmap_arguments.att_lower_threshold = '0.1' is not a quantile"),
])
def test_threshold_validation_messages(lower, upper, words):
    with pytest.raises(ConfigError) as err:
        fit_scale([np.arange(4.0)], lower=lower, upper=upper)
    assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        percentile_scale(lower, upper)


def test_other_validation_messages():
    with pytest.raises(ConfigError, match=r"heatmap_arguments\.score_threshold = 0 is not a quantile in \(0, 1\]"):
        fit_score_scale([np.ones(3)], score_threshold=0)
    with pytest.raises(ConfigError, match=r"heatmap_arguments\.mask_threshold = 300 is not a grey level 0-255"):
        check_mask_threshold(300)
    with pytest.raises(ConfigError, match=r"heatmap_arguments\.score_range = \[2, 1\]"):
        fixed_scale(2, 1)
    with pytest.raises(FeatureFileError, match="no scores"):
        fit_scale([np.zeros(0)], lower=0.0, upper=1.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_scale([np.array([1.0, np.nan])])


def test_score_scale_centred_on_chance_clips_outliers():
    rng = np.random.default_rng(1)
    p = np.clip(rng.normal(0.5, 0.1, 1000), 0, 1)
    s = fit_score_scale([p[:400], p[400:]], score_threshold=0.9, center=0.5)
    half = np.quantile(np.abs(p - 0.5), 0.9)
    assert s.lo == pytest.approx(0.5 - half) and s.hi == pytest.approx(0.5 + half)
    assert (s.quantity, s.source, s.n_slides, s.center) == ("score", "run", 2, 0.5)
    v = s.apply(p)
    assert s.apply([0.5])[0] == pytest.approx(0.5)                # chance -> colormap middle
    assert np.mean((v == 0) | (v == 1)) == pytest.approx(0.1, abs=0.01)   # 10% clipped


def test_percentile_and_fixed_scales():
    s = percentile_scale(0.0, 1.0)
    assert (s.kind, s.lo, s.hi, s.source) == ("percentile", 0.0, 100.0, "slide")
    np.testing.assert_array_equal(s.apply([0.0, 50.0, 100.0]), [0.0, 0.5, 1.0])
    f = fixed_scale(-3, 3)
    assert (f.kind, f.source, f.n_slides) == ("fixed", "config", 0)
    np.testing.assert_array_equal(f.apply([-5, 0, 5]), [0.0, 0.5, 1.0])


def test_to_dict_round_trip_and_describe(two_slides):
    s = fit_scale(list(two_slides), lower=0.01, upper=1.0)
    d = s.to_dict()
    assert set(d) >= {"kind", "lo", "hi", "att_lower_threshold", "att_upper_threshold", "source",
                      "n_slides", "n_scores"}
    assert all(isinstance(d[k], float) for k in ("lo", "hi"))
    assert ScoreScale.from_dict({**d, "extra": 1}) == s
    assert s.describe().startswith("across 2 slides: quantiles 0.01-1 of 1202 attention scores -> [")


def test_background_mask():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0] = 255                      # white: background
    img[1, 0] = (224, 224, 224)       # exactly the threshold: background (Marugoto keeps < t)
    img[1, 1] = (223, 223, 223)       # just darker: tissue
    img[1, 2] = (250, 120, 250)       # pink tissue, luma ~190
    mask = background_mask(img, 224)
    np.testing.assert_array_equal(mask, [[True, True, True], [True, False, False]])
    assert mask.dtype == bool
    with pytest.raises(ConfigError, match="mask_threshold"):
        background_mask(img, -1)
