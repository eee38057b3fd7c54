"""``extract-features`` on a real slide: CLAM and TRIDENT layouts with what made them, resumable,
and reused by the heatmap pipeline with zero patches encoded."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from create_heatmaps import main as create_main
from heatmaps.run import run_config

from .conftest import fast_config

pytestmark = [pytest.mark.shared, pytest.mark.slow]
SLIDE = "CMU-1-Small-Region"


def test_extract_writes_both_layouts_resumes_and_feeds_the_heatmaps(shared_dir, tmp_path, caplog):
    weights = shared_dir / "clam_reference" / "checkpoints" / "resnet50_trunc_seed0.safetensors"
    pl = tmp_path / "pl.csv"
    pl.write_text(f"slide_id\n{SLIDE}.svs\nmissing.svs\n")
    feat = tmp_path / "feats"
    argv = ["extract", "--data_dir", str(shared_dir / "slides"), "--process_list", str(pl), "--feat_dir", str(feat),
            "--layout", "both", "--target_img_size", "32", "--weights_path", str(weights),
            "--preset", "presets/bwh_biopsy.csv", "--quiet"]
    assert create_main(argv) == 1                  # the missing slide fails, the real one is written
    clam, trident = feat / "h5_files" / f"{SLIDE}.h5", feat / "features_resnet50_trunc" / f"{SLIDE}.h5"
    with h5py.File(clam) as f, h5py.File(trident) as g:
        a = dict(f["features"].attrs)
        assert a["encoder"] == "resnet50_trunc" and a["patch_size"] == 256 and a["patch_level"] == 0
        assert len(a["weights_sha256"]) == 64 and a["level0_magnification"] == pytest.approx(20.0, rel=0.01)
        assert f["features"].shape[1] == 1024 and np.array_equal(f["coords"][:], g["coords"][:])
        assert g["coords"].attrs["patch_size_level0"] == 256 and g["coords"].attrs["target_magnification"] > 0
        feats = f["features"][:]
    assert np.array_equal(torch.load(feat / "pt_files" / f"{SLIDE}.pt").numpy(), feats)
    mtime = clam.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        create_main(argv[:-1])
    assert "skipped (complete)" in caplog.text and clam.stat().st_mtime_ns == mtime
    for sub in ("h5_files", "features_resnet50_trunc"):
        out = tmp_path / sub
        out.mkdir()
        cfg = fast_config(shared_dir, out, [{"slide_id": f"{SLIDE}.svs"}],
                          data_arguments={"features_dir": str(feat / sub)})
        summary = run_config(cfg, progress=False)
        assert not summary.failed, summary.failed
        assert summary.n_encoded == 0, sub
