"""Score maps and colour scales across slides, and the feature cache, through the whole pipeline."""
from __future__ import annotations

import json
import logging

import h5py
import pytest

from heatmaps.run import run_config

pytestmark = [pytest.mark.shared, pytest.mark.slow]
TWO = [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}, {"slide_id": "tcga-cr-7395-01a-01-ts1", "label": "class_b"}]
MAPS = {"score_maps": True, "score_classes": "all", "normalize_across_slides": True}


def test_maps_share_one_scale_across_slides(make_fast_config, tmp_path):
    cfg = make_fast_config(tmp_path, TWO, heatmap_arguments=MAPS)
    summary = run_config(cfg, progress=False)
    assert not summary.failed, summary.failed
    scales = {}
    for row in TWO:
        sid, label = row["slide_id"], row["label"]
        prod = tmp_path / "prod" / "FAST" / label
        for stem in (f"{sid}_attention", f"{sid}_score_class_a", f"{sid}_score_class_b"):
            assert (prod / f"{stem}.jpg").is_file() and (prod / f"{stem}_colorbar.png").is_file()
            scales[(sid, stem[len(sid) + 1:])] = json.loads((prod / f"{stem}_scale.json").read_text())
        with h5py.File(tmp_path / "raw/FAST" / label / sid / f"{sid}_0.0_roi_False.h5") as f:
            assert f["attention_raw"].shape[0] == f["coords"].shape[0] and f["class_scores"].shape[1] == 2
            assert any(k.startswith("attention_scale") for k in f.attrs)
    for kind in ("attention", "score_class_a", "score_class_b"):
        a, b = scales[(TWO[0]["slide_id"], kind)], scales[(TWO[1]["slide_id"], kind)]
        assert a["source"] == b["source"] == "run" and a["n_slides"] == 2
        assert (a["lo"], a["hi"]) == (b["lo"], b["hi"])


def test_per_slide_scales_differ_and_one_slide_run_warns(make_fast_config, tmp_path, caplog):
    cfg = make_fast_config(tmp_path / "own", TWO, heatmap_arguments={"score_maps": True})
    run_config(cfg, progress=False)
    los = {json.loads(p.read_text())["lo"] for p in (tmp_path / "own/prod").rglob("*_attention_scale.json")}
    assert len(los) == 2                          # each slide its own scale
    cfg = make_fast_config(tmp_path / "one", TWO[:1], heatmap_arguments=MAPS)
    with caplog.at_level(logging.WARNING, logger="heatmaps"):
        run_config(cfg, progress=False)
    assert any("slide" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_feature_cache_skips_the_encoder_and_gives_identical_blockmaps(make_fast_config, tmp_path):
    cfg = make_fast_config(tmp_path, TWO[:1], exp_arguments={"cache_dir": str(tmp_path / "cache")})
    first = run_config(cfg, progress=False)
    assert first.n_encoded > 0
    raw = tmp_path / "raw/FAST/class_a/CMU-1-Small-Region"
    with h5py.File(raw / "CMU-1-Small-Region_blockmap.h5") as f:
        before = f["attention_scores"][:].tobytes(), f["coords"][:].tobytes()
    (raw / "CMU-1-Small-Region.h5").unlink()      # no reuse from the raw dir: only the cache can help
    again = run_config(cfg, progress=False, force=True)
    assert again.n_encoded == 0 and not again.failed
    with h5py.File(raw / "CMU-1-Small-Region_blockmap.h5") as f:
        assert (f["attention_scores"][:].tobytes(), f["coords"][:].tobytes()) == before
