"""A heatmap TIFF and a whole run as sources; the create-heatmaps subcommand."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import create_heatmaps
from viewer.app import create_app
from viewer.registry import Registry

SID = "CMU-1-Small-Region"


def test_tiff_heatmap_dzi_and_tiles_follow_the_slide(cmu_slide, heatmap_tiff, clam_fine):
    c = create_app(Registry.single(cmu_slide, heatmap_tiff)).test_client()
    assert c.get(f"/dzi/{SID}/heatmap.dzi").data == c.get(f"/dzi/{SID}/slide.dzi").data
    r = c.get(f"/tiles/{SID}/heatmap/12/4_5.jpeg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    tiff_tile = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR).astype(int)
    # the same tile drawn live from the score file: equal up to JPEG loss
    live = create_app(Registry.single(cmu_slide, clam_fine, patch_size=256)).test_client()
    png = cv2.imdecode(np.frombuffer(live.get(f"/tiles/{SID}/heatmap/12/4_5.png").data, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(tiff_tile - png.astype(int)).mean() < 8
    shifted = np.abs(tiff_tile[:, 4:] - png[:, :-4].astype(int)).mean()   # 4 px off: clearly worse
    assert shifted > 2 * np.abs(tiff_tile - png.astype(int)).mean()
    assert "TIFF" in c.get(f"/api/value/{SID}?x=1&y=1").get_json()["error"]


def test_run_lists_every_slide_with_its_results(clam_run, slides_dir, shared_dir):
    csv = shared_dir / "clam_reference/real_sb/heatmaps/results/real_sb.csv"
    reg = Registry.from_run(clam_run, slide_dir=slides_dir, results_csv=csv, patch_size=256)
    c = create_app(reg).test_client()
    rows = c.get("/api/slides").get_json()
    assert {r["slide_id"] for r in rows} == {SID, "tcga-cr-7395-01a-01-ts1"}
    assert len(rows) == 4                               # blockmap + fine pass per slide
    cmu = [r for r in rows if r["slide_id"] == SID]
    assert all(r["label"] == "class_a" and r["p_0"] == pytest.approx(0.50172156) for r in cmu)
    eid = cmu[0]["id"]
    assert c.get(f"/tiles/{eid}/heatmap/12/3_3.png").status_code == 200
    cb = c.get(f"/api/colorbar/{eid}?scale=run").get_json()
    assert "2 slides of the run" in cb["scale"]
    assert c.get("/tiles/CMU-1-Small-Region/heatmap/12/3_3.png").status_code == 404   # ids, not names


def test_run_ignores_files_whose_real_path_leaves_it(clam_run, slides_dir, tmp_path):
    run = tmp_path / "EXP"
    (run / "class_a" / SID).mkdir(parents=True)
    src = clam_run / "class_a" / SID
    (run / "class_a" / SID / f"{SID}_blockmap.h5").write_bytes((src / f"{SID}_blockmap.h5").read_bytes())
    (run / "class_a" / SID / "escape.h5").symlink_to(src / f"{SID}_0.5_roi_False.h5")
    reg = Registry.from_run(run, slide_dir=slides_dir, patch_size=256)
    assert [e.heatmap_path.name for e in reg.entries.values()] == [f"{SID}_blockmap.h5"]


def test_create_heatmaps_view_is_the_viewer(capsys):
    assert create_heatmaps.main(["view", "--slide", "nope.svs", "--heatmap", "nope.h5"]) == 2
    assert "heatmap not found: nope.h5" in capsys.readouterr().err


def test_clam_fine_pass_read_as_percentiles_when_told(cmu_slide, clam_fine):
    """CLAM's fine-pass H5 does not say it holds percentiles: raw by default, percentiles with
    --score-kind percentile (then no raw attention is claimed)."""
    from wsi_core.formats import read_scores
    sf = read_scores(clam_fine)
    as_raw = Registry.single(cmu_slide, clam_fine, patch_size=256).heatmap(SID)
    told = Registry.single(cmu_slide, clam_fine, patch_size=256, score_kind="percentile").heatmap(SID)
    np.testing.assert_array_equal(as_raw.raw, sf.scores)
    assert told.raw is None
    np.testing.assert_array_equal(told.percentiles, sf.scores.astype(np.float64))
    p = told.value_at(1000, 1000)[0]
    assert p["raw"] is None and p["percentile"] == pytest.approx(float(sf.scores[p["index"]]))
