"""A heatmap TIFF and a whole run as sources; the create-heatmaps subcommand."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import create_heatmaps
from viewer.app import create_app
from viewer.registry import Registry, run_dir_of_results
from wsi_core.errors import ConfigError
from viewer.sources import smallest_k

SID = "CMU-1-Small-Region"


def test_tiff_heatmap_dzi_and_tiles_follow_the_slide(cmu_slide, heatmap_tiff, clam_fine):
    c = create_app(Registry.single(cmu_slide, heatmap_tiff)).test_client()
    assert c.get(f"/dzi/{SID}/heatmap.dzi").data == c.get(f"/dzi/{SID}/slide.dzi").data
    r = c.get(f"/tiles/{SID}/heatmap/12/4_5.jpeg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    tiff_tile = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR).astype(int)
    # the same tile drawn live from the score file: equal up to JPEG loss
    live = create_app(Registry.single(cmu_slide, clam_fine, patch_size=256)).test_client()
    png = cv2.imdecode(np.frombuffer(live.get(f"/tiles/{SID}/heatmap/12/4_5.png?segment=0").data, np.uint8),
                       cv2.IMREAD_COLOR)         # the TIFF was drawn without contours
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
    eid = next(r["id"] for r in cmu if r["heatmap"].endswith("_blockmap.h5"))
    assert c.get(f"/tiles/{eid}/heatmap/12/3_3.png").status_code == 200
    cb = c.get(f"/api/colorbar/{eid}?scale=run").get_json()
    assert "2 slides of the run" in cb["scale"]
    assert c.get("/tiles/CMU-1-Small-Region/heatmap/12/3_3.png").status_code == 404   # ids, not names
    # the run's config.yaml says use_ref_scores: true - CLAM's fine passes hold percentiles, its blockmaps raw
    for r in rows:
        src = reg.heatmap(r["id"])
        assert (src.raw is None) == r["heatmap"].endswith("_roi_False.h5"), r["heatmap"]


def test_a_results_csv_alone_opens_its_run(clam_run, slides_dir, shared_dir, tmp_path):
    """--run RESULTS.csv: the run directory is found beside the CSV (CLAM's layout, the seed layout)."""
    csv = shared_dir / "clam_reference/real_sb/heatmaps/results/real_sb.csv"
    assert run_dir_of_results(csv) == clam_run.resolve()
    reg = Registry.from_results(csv, slide_dir=slides_dir, patch_size=256)
    assert len(reg.entries) == 4 and all("p_0" in e.info for e in reg.entries.values())
    seed = tmp_path / "out"
    (seed / "raw" / "results").mkdir(parents=True)
    (seed / "results.csv").write_text("slide_id,label\n")
    assert run_dir_of_results(seed / "results.csv") == seed / "raw" / "results"
    (tmp_path / "lost.csv").write_text("slide_id\n")
    with pytest.raises(ConfigError, match="no run directory found beside it"):
        run_dir_of_results(tmp_path / "lost.csv")


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


def test_clam_fine_pass_read_as_the_rerender_reads_it(cmu_slide, clam_fine, clam_run):
    """CLAM's fine-pass H5 does not say what it holds: by default the viewer decides as the
    re-render does (a fine pass whose values all lie in 0-100 holds percentiles, use_ref_scores);
    --score-kind raw overrides; a blockmap is raw whatever --score-kind says."""
    from wsi_core.formats import read_scores
    sf = read_scores(clam_fine)
    default = Registry.single(cmu_slide, clam_fine, patch_size=256).heatmap(SID)
    as_raw = Registry.single(cmu_slide, clam_fine, patch_size=256, score_kind="raw").heatmap(SID)
    assert default.raw is None
    np.testing.assert_array_equal(default.percentiles, sf.scores.astype(np.float64))
    np.testing.assert_array_equal(as_raw.raw, sf.scores)
    p = default.value_at(1000, 1000)[0]
    assert p["raw"] is None and p["percentile"] == pytest.approx(float(sf.scores[p["index"]]))
    blockmap = clam_run / "class_a" / SID / f"{SID}_blockmap.h5"
    assert Registry.single(cmu_slide, blockmap, patch_size=256, score_kind="percentile").heatmap(SID).raw is not None


def test_contours_beside_the_scores_draw_the_tissue_mask(cmu_slide, clam_fine):
    """CLAM's run keeps {slide_id}_mask.pkl beside the fine pass: the live tiles use those contours."""
    c = create_app(Registry.single(cmu_slide, clam_fine, patch_size=256)).test_client()
    assert c.get(f"/api/slide/{SID}").get_json()["tissue"] == f"{SID}_mask.pkl"
    src = Registry.single(cmu_slide, clam_fine, patch_size=256, segment=False).heatmap(SID)
    assert src.contours is None and src.tissue_source is None


def test_smallest_k_is_the_stable_argsort():
    rng = np.random.default_rng(0)
    for v in (rng.integers(0, 5, 1000).astype(float), rng.random(1000), np.zeros(10)):
        for k in (0, 1, 8, 999, 1000, 2000):
            np.testing.assert_array_equal(smallest_k(v, k), np.argsort(v, kind="stable")[:k])


def test_an_unreadable_contour_file_leaves_the_map_unmasked_with_a_warning(cmu_slide, our_scores, tmp_path, caplog):
    scores = tmp_path / our_scores.name
    scores.write_bytes(our_scores.read_bytes())
    (tmp_path / f"{SID}_tissue.geojson").write_text("not json")
    src = Registry.single(cmu_slide, scores).heatmap(SID)
    assert src.contours is None and src.tissue_source is None
    assert "no tissue mask" in caplog.text and f"{SID}_tissue.geojson" in caplog.text
