"""rank_percentiles / reference_percentiles against scipy on data with many ties."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import percentileofscore, rankdata

from vis_utils.percentiles import rank_percentiles, reference_percentiles


@pytest.fixture(scope="module")
def tied():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 40, 500).astype(np.float32) / 7   # many ties
    ref = np.concatenate([rng.integers(0, 40, 97) / 7, [scores[0]] * 5]).astype(np.float32)
    return scores, ref


def test_rank_percentiles_equal_scipy(tied):
    scores, _ = tied
    got = rank_percentiles(scores.reshape(-1, 1))
    want = rankdata(scores, "average") / len(scores) * 100
    assert got.dtype == np.float64 and got.shape == (500,)
    np.testing.assert_array_equal(got, want)


def test_reference_percentiles_equal_scipy(tied):
    scores, ref = tied
    extra = np.array([-1.0, 100.0, ref.min(), ref.max()], dtype=np.float32)  # outside / on the ends
    s = np.concatenate([scores, extra])
    got = reference_percentiles(s.reshape(-1, 1), ref.reshape(-1, 1))
    want = np.array([percentileofscore(ref, v, kind="rank") for v in s])
    np.testing.assert_array_equal(got, want)
    assert got[-4] == 0.0 and got[-3] == 100.0


def test_reference_percentiles_vectorised_scipy_call(tied):
    scores, ref = tied
    want = percentileofscore(ref, scores, kind="rank")
    np.testing.assert_array_equal(reference_percentiles(scores, ref), want)


def test_empty_and_bad_input():
    assert rank_percentiles(np.zeros((0, 1))).shape == (0,)
    with pytest.raises(ValueError, match="reference scores are empty"):
        reference_percentiles([1.0], [])
    with pytest.raises(ValueError, match="scores contains NaN or Inf"):
        rank_percentiles([1.0, np.nan])
    with pytest.raises(ValueError, match="reference scores contains NaN or Inf"):
        reference_percentiles([1.0], [np.inf])
