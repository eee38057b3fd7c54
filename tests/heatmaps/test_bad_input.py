"""Bad input: one clear line naming the slide/file/key and the fix; the batch goes on; the status
column records it; nothing already written is lost or left half-written."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

from heatmaps.cli import main as cli_main
from heatmaps.run import run_config

pytestmark = [pytest.mark.shared, pytest.mark.slow]
GOOD = {"slide_id": "CMU-1-Small-Region", "label": "class_a"}


def _features(path: Path, n_feat: int, n_coords: int, dim: int = 1024, nan: bool = False) -> Path:
    feats = np.random.default_rng(0).normal(size=(n_feat, dim)).astype(np.float32)
    if nan:
        feats[3, 7] = np.nan
    with h5py.File(path, "w") as f:
        f["features"] = feats
        f["coords"] = np.arange(n_coords * 2, dtype=np.int64).reshape(-1, 2) * 256
    return path


def _blank_slide(path: Path) -> Path:
    """A white pyramidal TIFF that OpenSlide opens: nothing to segment."""
    img = np.full((1024, 1024, 3), 245, np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, tile=(256, 256), photometric="rgb", compression="zlib")
    return path


def _status(out: Path) -> dict[str, str]:
    df = pd.read_csv(out / "results" / "process_list.csv")
    return dict(zip(df["slide_id"], df["status"]))


def test_one_batch_of_bad_slides(make_fast_config, tmp_path):
    cfg = make_fast_config(tmp_path, [
        {"slide_id": "missing-slide", "label": "class_a"},
        {"slide_id": "kidney-48-5.tif", "label": "class_a"},
        {"slide_id": "pathml_small_dicom.dcm", "label": "class_a"},
        {"slide_id": "blank.tiff", "label": "class_a"},
        {"slide_id": "CMU-1-Small-Region", "label": "class_c"},
        {**GOOD, "features_path": str(_features(tmp_path / "mismatch.h5", 30, 29))},
        {**GOOD, "features_path": str(_features(tmp_path / "nan.h5", 30, 30, nan=True))},
        {**GOOD, "features_path": str(_features(tmp_path / "uni2.h5", 30, 30, dim=1536))},
        GOOD,
    ])
    _blank_slide(tmp_path / "slides" / "blank.tiff")
    before = (tmp_path / "process_list.csv").read_bytes()
    summary = run_config(cfg, progress=False)
    assert (tmp_path / "process_list.csv").read_bytes() == before      # the user's list is input only
    status = list(pd.read_csv(tmp_path / "results" / "process_list.csv")["status"])
    expected = [
        r"failed: slide missing-slide: file not found: .*missing-slide.svs; check data_arguments.data_dir",
        r"failed: .*kidney-48-5.tif.*(unsupported|not a supported)",
        r"failed: .*pathml_small_dicom.dcm",
        r"failed: .*blank.*no tissue",
        r"failed: slide CMU-1-Small-Region: label 'class_c' is not in data_arguments.label_dict \(class_a, class_b\)",
        r"failed: .*mismatch.h5: 30 feature rows but 29 coords",
        r"failed: .*nan.h5: 1 of 30 feature rows hold NaN or Inf",
        r"failed: checkpoint ckpt_clam_sb_seed0.pt expects 1024-d features but .*uni2.h5 holds 1536-d features",
        r"processed",
    ]
    assert len(status) == len(expected)
    import re
    for got, want in zip(status, expected):
        assert re.search(want, got, flags=re.IGNORECASE), (got, want)
        assert "\n" not in got
    assert len(summary.processed) == 1 and len(summary.failed) == 8
    results = pd.read_csv(tmp_path / "results" / "process_list.csv")
    assert results["status"].iloc[-1] == "processed" and results["bag_size"].iloc[-1] == 30
    assert not list(tmp_path.rglob("*.tmp-*")), "temporary files left behind"


def test_roi_outside_slide_and_empty(make_fast_config, tmp_path):
    cfg = make_fast_config(tmp_path, [
        {**GOOD, "x1": 5000, "y1": 5000, "x2": 6000, "y2": 6000},
        {**GOOD, "x1": 900, "y1": 900, "x2": 800, "y2": 1200},
        {**GOOD, "x1": 400, "y1": 700, "x2": 1900, "y2": 2300},
    ], heatmap_arguments={"use_roi": True, "vis_level": 0})
    run_config(cfg, progress=False)
    status = list(pd.read_csv(tmp_path / "results" / "process_list.csv")["status"])
    assert "outside" in status[0] and "x1,y1,x2,y2" in status[0] and "CMU-1-Small-Region" in status[0]
    assert "empty" in status[1] or "x2" in status[1]
    assert status[2] == "processed"


def test_config_level_errors_do_not_stop_the_next_config(make_fast_config, tmp_path, capsys):
    import yaml

    good = make_fast_config(tmp_path / "good", [GOOD])
    bad_ckpt = tmp_path / "weird.pt"
    import torch
    torch.save({"encoder.weight": torch.zeros(3, 3)}, bad_ckpt)
    configs = []
    for name, change in (("layout", {"ckpt_path": str(bad_ckpt)}), ("type", {"model_type": "clam_xb"}), ("good", {})):
        data = good.model_dump(mode="json")
        data["model_arguments"].update(change)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        configs.append(str(path))
    code = cli_main(["--config", *configs, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "weird.pt" in err and "encoder.weight" in err                  # unknown layout, named
    assert "clam_xb" in err and "clam_mb" in err                           # unknown model_type, closest
    assert list((tmp_path / "good" / "prod").rglob("*.jpg")), "the good config after two bad ones did not run"


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "No space left"), (errno.EACCES, "ermission denied")])
def test_full_disk_or_unwritable_output_fails_that_slide_only(make_fast_config, tmp_path, monkeypatch, code, words):
    cfg = make_fast_config(tmp_path, [GOOD, {"slide_id": "tcga-cr-7395-01a-01-ts1", "label": "class_b"}],
                           patching_arguments={"patch_size": 512, "overlap": 0.0})
    real_replace = os.replace

    def replace(src, dst):
        if "CMU-1-Small-Region_blockmap.png" in str(dst):
            raise OSError(code, os.strerror(code), str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    run_config(cfg, progress=False)
    status = _status(tmp_path)
    assert status["CMU-1-Small-Region"].startswith("failed: cannot write ") and words in status["CMU-1-Small-Region"]
    assert "CMU-1-Small-Region_blockmap.png" in status["CMU-1-Small-Region"]
    assert status["tcga-cr-7395-01a-01-ts1"] == "processed"
    raw = tmp_path / "raw" / "FAST" / "class_a" / "CMU-1-Small-Region"
    assert (raw / "CMU-1-Small-Region_blockmap.h5").is_file()       # written before the failure: kept
    assert not list(tmp_path.rglob("*.tmp-*"))
