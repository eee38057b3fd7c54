"""Fixtures of the viewer tests: a real slide from ../shared and score files beside it.

``clam_scores`` are CLAM's own reference run on CMU-1-Small-Region (blockmap and 0.5-overlap fine
pass, no patch size recorded: 256 level-0 px); ``our_scores`` is a score H5 in this tool's layout
(raw attention, class scores, patch size attributes) on the same patch coordinates, written with
``wsi_core.formats.write_scores``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_core.formats import read_scores, write_scores

CLAM_RUN = Path("clam_reference/real_sb/heatmap_raw_results/REAL_SB")
SLIDE_ID = "CMU-1-Small-Region"


@pytest.fixture(scope="session")
def cmu_slide(slides_dir: Path) -> Path:
    return slides_dir / f"{SLIDE_ID}.svs"


@pytest.fixture(scope="session")
def clam_run(shared_dir: Path) -> Path:
    return shared_dir / CLAM_RUN


@pytest.fixture(scope="session")
def clam_fine(clam_run: Path) -> Path:
    return clam_run / "class_a" / SLIDE_ID / f"{SLIDE_ID}_0.5_roi_False.h5"


@pytest.fixture(scope="session")
def our_scores(clam_fine: Path, tmp_path_factory) -> Path:
    """Raw attention = CLAM's fine-pass values minus 50 (so raw != percentile), two class logits."""
    sf = read_scores(clam_fine)
    raw = sf.scores.astype(np.float32) - 50
    cls = np.stack([raw / 10, -raw / 10], axis=1)
    out = tmp_path_factory.mktemp("scores") / f"{SLIDE_ID}_fine.h5"
    return write_scores(out, raw, sf.coords, attrs={"score_kind": "raw", "patch_size": 256, "patch_level": 0,
                                                     "step_size": 128},
                        attention_raw=raw, class_scores=cls)


@pytest.fixture(scope="session")
def heatmap_tiff(cmu_slide: Path, clam_fine: Path, tmp_path_factory) -> Path:
    """A pyramidal heatmap TIFF of CMU-1-Small-Region at vis_level 0 written by this tool."""
    from vis_utils.heatmap import HeatmapStyle
    from vis_utils.tiled import render_heatmap_tiff
    from wsi_core.slide import open_slide

    sf = read_scores(clam_fine)
    out = tmp_path_factory.mktemp("tiff") / f"{SLIDE_ID}_heatmap.tif"
    with open_slide(cmu_slide) as slide:
        return render_heatmap_tiff(slide, sf.scores, sf.coords, patch_size_level0=(256, 256), vis_level=0,
                                   contours=None, style=HeatmapStyle(segment=False), convert_to_percentiles=True,
                                   out_path=out, compression="deflate").heatmap
