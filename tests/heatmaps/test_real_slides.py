"""The whole pipeline on every real slide in ../shared/slides: Aperio SVS, Aperio JPEG 2000 without
mpp, both Hamamatsu NDPI (fluorescence, black background), the DICOM folder, and the reconstructed
CPTAC slides (both geometries). Cheap settings (32-px encoder input, overlap 0) keep it quick;
the parity tests cover CLAM's exact settings."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from heatmaps.process_list import slide_stem
from heatmaps.run import run_config

pytestmark = [pytest.mark.shared, pytest.mark.slow]

SMALL = ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs", "slideio_test3-DAPI-2-387.ndpi",
         "slideio_test3-TRITC-2-560.ndpi", "dicom_cmu-1-small-region"]
LARGE = ["reconstructed/C3L-01663-21.tiff", "reconstructed/C3L-03262-22.tiff",
         "reconstructed/real_geometry/C3L-01663-21.tiff", "reconstructed/real_geometry/C3L-03262-22.tiff"]


def _check_outputs(out, slide_ids):
    results = pd.read_csv(out / "results" / "process_list.csv")
    assert list(results["status"]) == ["processed"] * len(slide_ids), list(results["status"])
    for sid in slide_ids:
        stem = slide_stem(sid, ".svs")
        raw = out / "raw" / "FAST" / "class_a" / stem
        with h5py.File(raw / f"{stem}_blockmap.h5") as f:
            scores, coords = f["attention_scores"][:], f["coords"][:]
        assert scores.shape == (len(coords), 1) and np.isfinite(scores).all() and len(coords) > 0
        heatmaps = list((out / "prod" / "FAST" / "class_a").glob(f"{stem}_0.0_roi_0_*.jpg"))
        assert len(heatmaps) == 1
        img = np.asarray(Image.open(heatmaps[0]))
        assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 1


def test_every_small_real_slide(make_fast_config, tmp_path):
    cfg = make_fast_config(tmp_path, [{"slide_id": s, "label": "class_a"} for s in SMALL])
    run_config(cfg, progress=False)
    _check_outputs(tmp_path, SMALL)


def test_reconstructed_cptac_slides(make_fast_config, tmp_path, shared_dir):
    rows = [{"slide_id": s.rsplit("/", 1)[1], "label": "class_a", "source": s.rsplit("/", 1)[0]} for s in LARGE]
    slides = shared_dir / "slides"
    cfg = make_fast_config(tmp_path / "a", rows[:2], patching_arguments={"patch_level": 1, "patch_size": 512, "overlap": 0.0},
                           data_arguments={"data_dir": str(slides / "reconstructed"), "slide_ext": ".tiff"})
    run_config(cfg, progress=False)
    _check_outputs(tmp_path / "a", [r["slide_id"] for r in rows[:2]])
    cfg = make_fast_config(tmp_path / "b", rows[2:], patching_arguments={"patch_level": 1, "patch_size": 512, "overlap": 0.0},
                           data_arguments={"data_dir": str(slides / "reconstructed/real_geometry"), "slide_ext": ".tiff"})
    run_config(cfg, progress=False)
    _check_outputs(tmp_path / "b", [r["slide_id"] for r in rows[2:]])
