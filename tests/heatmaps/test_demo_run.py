"""The embedded demo end to end (what `create-heatmaps --demo` runs): the planted lesion must be
hot, both in the fine-pass scores and in the rendered heatmap's pixels."""
from __future__ import annotations

import h5py
import matplotlib
import numpy as np
import pytest
from PIL import Image

from heatmaps.cli import main as cli_main
from heatmaps.demo import DEMO_SLIDE_SEED
from wsi_core.synthetic import rank_auc, render_demo_slide

pytestmark = pytest.mark.slow


def test_demo_heatmap_shows_the_planted_lesion_hot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                      # the demo writes heatmaps/demo/ under the cwd
    assert cli_main(["--demo", "--quiet"]) == 0
    _, demo = render_demo_slide(seed=DEMO_SLIDE_SEED)
    raw = tmp_path / "heatmaps/demo/heatmap_raw_results/DEMO/lesion/demo_slide"
    with h5py.File(raw / "demo_slide_0.5_roi_False.h5") as f:
        scores, coords = f["attention_scores"][:].ravel(), f["coords"][:]
    lesion = demo.lesion_fraction(coords, patch_size=256) > 0.5
    assert lesion.sum() >= 5 and (~lesion).sum() >= 50
    auc = rank_auc(scores, lesion)
    assert auc >= 0.95, auc                         # measured: 1.0

    # The picture a person looks at: undo the 0.4 blend with the orig image and read the jet value
    # of each pixel back (nearest colour of jet's 256-entry table); lesion tissue vs other tissue.
    prod = tmp_path / "heatmaps/demo/heatmap_production_results/DEMO/lesion"
    heatmap = np.asarray(Image.open(prod / "demo_slide_0.5_roi_0_blur_0_rs_1_bc_0_a_0.4_l_1_bi_0_-1.0.jpg"), np.float32)
    orig = np.asarray(Image.open(prod / "demo_slide_orig_1.jpg"), np.float32)
    colour = np.clip((heatmap - 0.6 * orig) / 0.4, 0, 255)
    lut = (matplotlib.colormaps["jet"](np.arange(256))[:, :3] * 255).astype(np.float32)
    scale = 16 // 4                                  # masks at downsample 16, heatmap at vis_level 1 (4)
    lesion_px = np.kron(demo.lesion_mask, np.ones((scale, scale), bool))[: colour.shape[0], : colour.shape[1]]
    tissue_px = np.kron(demo.tissue_mask, np.ones((scale, scale), bool))[: colour.shape[0], : colour.shape[1]]
    rng = np.random.default_rng(0)
    pick = lambda m: colour[m][rng.choice(int(m.sum()), size=min(4000, int(m.sum())), replace=False)]  # noqa: E731
    inside, outside = pick(lesion_px), pick(tissue_px & ~lesion_px)
    value = lambda c: np.argmin(((c[:, None, :] - lut[None]) ** 2).sum(-1), axis=1) / 255  # noqa: E731
    v_in, v_out = value(inside), value(outside)
    pixel_auc = rank_auc(np.r_[v_in, v_out], np.r_[np.ones(len(v_in), bool), np.zeros(len(v_out), bool)])
    # measured: median 0.92 inside, 0.45-0.46 outside, pixel AUC 0.997 (patch-sized bleed at the rim)
    assert np.median(v_in) > 0.8 and pixel_auc >= 0.95, (np.median(v_in), np.median(v_out), pixel_auc)
    assert (prod / "demo_slide_orig_1.jpg").is_file()
    top = list((tmp_path / "heatmaps/demo/heatmap_production_results/DEMO/sampled_patches").rglob("topk_high_attention/*.png"))
    assert len(top) == 5
