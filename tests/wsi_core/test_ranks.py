"""The numpy average ranks are scipy's rankdata(method='average')."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from wsi_core.ranks import average_ranks


@pytest.mark.parametrize("values", [
    np.random.default_rng(0).integers(0, 7, 1001).astype(np.float64),     # many ties
    np.random.default_rng(1).standard_normal(5000),
    np.random.default_rng(2).standard_normal(300).astype(np.float32),
    np.zeros(4), np.array([2.5]), np.zeros(0),
], ids=["ties", "float64", "float32", "all tied", "one", "empty"])
def test_average_ranks_equal_scipy(values):
    np.testing.assert_array_equal(average_ranks(values), rankdata(values, "average"))
