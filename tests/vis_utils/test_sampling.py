"""sample_patches: CLAM sample_rois semantics (top-k order with ties, seeded range sampling)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from vis_utils.sampling import sample_patches


@pytest.fixture(scope="module")
def bag():
    rng = np.random.default_rng(1)
    scores = (rng.integers(0, 50, 300) / 10).astype(np.float32).reshape(-1, 1)
    coords = rng.integers(0, 10_000, (300, 2))
    return scores, coords


def test_topk_and_reverse(bag):
    scores, coords = bag
    pct = rankdata(scores.ravel(), "average") / 300 * 100
    idx, p = sample_patches(scores, coords, k=7, mode="topk")
    assert idx.dtype == np.int64 and p.dtype == np.float64 and len(idx) == 7
    np.testing.assert_array_equal(p, pct[idx])
    assert np.all(np.diff(p) <= 0) and p[0] == pct.max()
    assert np.all(pct[np.setdiff1d(np.arange(300), idx)] <= p.min())
    np.testing.assert_array_equal(idx, np.argsort(pct)[::-1][:7])  # numpy's tie order, like CLAM
    ridx, rp = sample_patches(scores, coords, k=5, mode="reverse_topk")
    np.testing.assert_array_equal(ridx, np.argsort(pct)[:5])
    assert np.all(np.diff(rp) >= 0) and rp[0] == pct.min()


def test_range_sample_is_seeded_like_numpy_global(bag):
    scores, coords = bag
    idx, p = sample_patches(scores, coords, k=10, mode="range_sample", seed=3,
                            score_start=40, score_end=60)
    assert len(idx) == 10 and np.all((p >= 40) & (p <= 60))
    pct = rankdata(scores.ravel(), "average") / 300 * 100
    np.random.seed(3)  # what CLAM does
    want = np.random.choice(np.flatnonzero((pct >= 40) & (pct <= 60)), 10, replace=False)
    np.testing.assert_array_equal(idx, want)
    again, _ = sample_patches(scores, coords, k=10, mode="range_sample", seed=3,
                              score_start=40, score_end=60)
    np.testing.assert_array_equal(idx, again)


def test_range_sample_fewer_candidates_and_none(bag):
    scores, coords = bag
    idx, p = sample_patches(scores, coords, k=1000, mode="range_sample", score_start=0, score_end=100)
    assert sorted(idx.tolist()) == list(range(300))
    # CLAM's default window 0..1 is compared with 0-100 percentiles: only the lowest 1 %
    idx, p = sample_patches(scores, coords, k=5, mode="range_sample")
    assert 0 < len(idx) <= 3 and np.all(p <= 1)
    idx, p = sample_patches(scores, coords, k=5, mode="range_sample", score_start=0, score_end=0.1)
    assert idx.shape == (0,) and p.shape == (0,) and idx.dtype == np.int64


def test_bad_mode_and_mismatch(bag):
    scores, coords = bag
    msg = "unknown sample mode 'top'; use one of topk, reverse_topk, range_sample"
    with pytest.raises(ValueError, match=msg):
        sample_patches(scores, coords, k=5, mode="top")
    with pytest.raises(ValueError, match="300 scores but 2 coords"):
        sample_patches(scores, coords[:2], k=5, mode="topk")
    with pytest.raises(ValueError, match="k must be >= 0"):
        sample_patches(scores, coords, k=-1, mode="topk")
