"""wsi_core.synthetic: deterministic synthetic slides with a planted lesion, their truth, rank AUC."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from wsi_core import synthetic as S

SMALL = (1024, 768)


def test_torch_free() -> None:
    code = "import wsi_core.synthetic, sys; sys.exit(10 * ('torch' in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]


def test_generation_is_deterministic() -> None:
    a, da = S.render_demo_slide(seed=5, size=SMALL)
    b, db = S.render_demo_slide(seed=5, size=SMALL)
    c, _ = S.render_demo_slide(seed=6, size=SMALL)
    assert a.shape == (768, 1024, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(da.lesion_mask, db.lesion_mask) and da.lesion == db.lesion
    assert np.array_equal(da.tissue_mask, db.tissue_mask)
    assert not np.array_equal(a, c)
    assert da.path is None and da.mpp == S.MPP == 0.5 and da.level_dimensions == ((1024, 768), (256, 192), (64, 48))


def test_explicit_lesion_and_bad_size() -> None:
    _, d = S.render_demo_slide(seed=3, size=SMALL, lesion=(300, 400, 150))
    assert d.lesion == (300, 400, 150)
    assert d.lesion_fraction(np.array([[236, 336]]), patch_size=128)[0] > 0.9
    with pytest.raises(ValueError, match="multiples of 16"):
        S.render_demo_slide(seed=0, size=(1000, 768))


def test_masks_grid_and_truth() -> None:
    rgb, d = S.render_demo_slide(seed=1, size=SMALL)
    assert d.lesion_mask.shape == d.tissue_mask.shape == (768 // 16, 1024 // 16)
    coords = S.grid_coords(d, patch_size=128, step=128)
    assert coords.dtype == np.int64 and coords.shape[1] == 2 and len(coords) > 0
    assert (d.tissue_fraction(coords, patch_size=128) > 0.5).all()
    lesion = d.lesion_fraction(coords, patch_size=128) > 0.5
    assert lesion.any() and (~lesion).any()
    darkness = np.array([255 - rgb[y:y + 128, x:x + 128].mean() for x, y in coords])
    assert S.rank_auc(darkness, lesion) > 0.9                   # the planted lesion is darker


def test_box_fraction() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    got = S.box_fraction(mask, np.array([[0, 0], [16, 16], [32, 32], [0, 0]]), 32, 16)
    np.testing.assert_allclose(got, [1.0, 0.25, 0.0, 1.0])


def test_rank_auc() -> None:
    assert S.rank_auc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1], bool)) == 1.0
    assert S.rank_auc(np.array([0.4, 0.3, 0.2, 0.1]), np.array([0, 0, 1, 1], bool)) == 0.0
    assert S.rank_auc(np.ones(4), np.array([0, 1, 0, 1], bool)) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        S.rank_auc(np.ones(3), np.zeros(3, bool))


def test_rank_auc_equals_scipy_ranks() -> None:
    """The numpy average ranks are scipy's rankdata(method='average'), ties included."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 300).astype(np.float64)      # many ties
    labels = rng.random(300) > 0.7
    ranks = rankdata(scores)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    want = (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    assert S.rank_auc(scores, labels) == want
