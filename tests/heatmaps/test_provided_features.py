"""The pre-extracted-features path: the user's features are reused, checked against the encoder
before new features are mixed in, and a slide whose segmentation finds nothing uses its bag as
the tissue. Real data: CLAM's official demo model on the real CPTAC features and coords."""
from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from heatmaps.config import parse_config
from heatmaps.layout import slide_outputs, style_json_path
from heatmaps.run import run_config
from wsi_core.errors import CheckpointError, ConfigError
from wsi_core.formats import write_trident_features_h5

pytestmark = [pytest.mark.shared, pytest.mark.slow]
SLIDES = {"C3L-01663-21": "LSCC", "C3L-03262-22": "LUAD"}


def cptac_config(shared, out, *, preset=None, **sections):
    """CLAM's demo config on the reconstructed CPTAC slides with the users' own features; CLAM's
    default segmentation unless ``preset``; small outputs (vis_level 2, no orig); the encoder in
    fp32 (CLAM's precision, so the features check compares like with like)."""
    parisa = shared / "mil" / "clam_demo_parisa"
    data = yaml.safe_load((parisa / "config.yaml").read_text())
    pl = out / "demo.csv"
    pd.DataFrame({"slide_id": list(SLIDES), "label": list(SLIDES.values()),
                  "features_path": [str(parisa / f"{s}.h5") for s in SLIDES]}).to_csv(pl, index=False)
    data["exp_arguments"].update(raw_save_dir=str(out / "raw"), production_save_dir=str(out / "prod"),
                                 results_dir=str(out / "results"), batch_size=64)
    data["data_arguments"].update(data_dir=str(shared / "slides/reconstructed/real_geometry"), process_list=str(pl),
                                  preset=preset, slide_ext=".tiff")
    data["model_arguments"]["ckpt_path"] = str(shared / "mil/clam_demo/s_0_checkpoint.pt")
    data.setdefault("encoder_arguments", {})["precision"] = "fp32"
    data["heatmap_arguments"].update(vis_level=2, save_orig=False, calc_heatmap=True)
    data["sample_arguments"]["samples"][0]["k"] = 2
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, source="cptac")


def _results(out) -> pd.DataFrame:
    return pd.read_csv(out / "results" / "demo.csv")


def test_overlap_0_draws_the_heatmap_from_the_users_features(shared_dir, tmp_path, monkeypatch):
    """CLAM's default segmentation finds no tissue on these slides: the bag is the tissue, and at
    overlap 0 every fine-pass patch is a bag patch - nothing is encoded (no encoder is even needed)."""
    monkeypatch.delenv("RESNET50_TRUNC_CKPT_PATH", raising=False)
    cfg = cptac_config(shared_dir, tmp_path, patching_arguments={"overlap": 0.0})
    summary = run_config(cfg, progress=False)
    assert not summary.failed, summary.failed
    assert summary.n_encoded == 0
    assert list(_results(tmp_path)["status"]) == ["processed", "processed"]
    parisa = shared_dir / "mil" / "clam_demo_parisa"
    for sid, label in SLIDES.items():
        out = slide_outputs(cfg, sid, label)
        with h5py.File(out.overlap_h5()) as f, h5py.File(parisa / f"{sid}.h5") as g:
            fine, bag = f["coords"][:], g["coords"][:]
            assert f.attrs["features_source"].endswith(f"{sid}.h5")
        assert {tuple(c) for c in fine} == {tuple(c) for c in bag}        # the fine pass is the bag
        img = np.asarray(Image.open(out.heatmap(cfg)))
        assert img.shape == {"C3L-01663-21": (1858, 1742, 3), "C3L-03262-22": (140, 155, 3)}[sid]   # level 2
        assert json.loads(style_json_path(out.heatmap(cfg)).read_text())["cmap"] == "jet"


def test_an_encoder_that_did_not_make_the_features_is_refused(shared_dir, tmp_path):
    """overlap 0.5 mixes new features with the user's: the seeded encoder did not make them, so
    the fine heatmap is skipped with the reason; blockmap, samples and results row are written."""
    ref = shared_dir / "clam_reference" / "checkpoints"
    cfg = cptac_config(shared_dir, tmp_path, patching_arguments={"overlap": 0.5},
                       encoder_arguments={"weights_path": str(ref / "resnet50_trunc_seed0.safetensors")})
    summary = run_config(cfg, progress=False)
    assert not summary.failed, summary.failed
    res = _results(tmp_path)
    for sid, label in SLIDES.items():
        status = res.loc[res["slide_id"] == sid, "status"].iloc[0]
        assert status.startswith("processed (fine pass skipped: encoder resnet50_trunc"), status
        assert "does not reproduce" in status and "encoder_arguments.model_name, weights_path" in status
        out = slide_outputs(cfg, sid, label)
        assert out.blockmap_h5.is_file() and out.blockmap_png.is_file()
        assert not out.heatmap(cfg).exists() and not out.overlap_h5().exists()
        assert list((tmp_path / "prod").rglob(f"*_{sid}_x_*.png")), "samples written"
    assert summary.n_encoded == 2 * 16                          # only the check's sample
    assert {"Pred_0", "p_0", "bag_size"} <= set(res.columns)


def test_features_check_warn_and_off_proceed(shared_dir, tmp_path, caplog):
    ref = shared_dir / "clam_reference" / "checkpoints"
    for mode in ("warn", "off"):
        out = tmp_path / mode
        out.mkdir()
        cfg = cptac_config(shared_dir, out, patching_arguments={"overlap": 0.5},
                           heatmap_arguments={"use_roi": True},
                           encoder_arguments={"weights_path": str(ref / "resnet50_trunc_seed0.safetensors"),
                                              "target_img_size": 32, "features_check": mode},
                           exp_arguments={"save_exp_code": mode})
        pd.DataFrame({"slide_id": list(SLIDES), "label": list(SLIDES.values()),   # an ROI keeps the fine pass small
                      "features_path": [str(shared_dir / "mil/clam_demo_parisa" / f"{s}.h5") for s in SLIDES],
                      "x1": [7200, 4200], "y1": [6900, 4200], "x2": [8300, 5300], "y2": [8000, 5300]}).to_csv(out / "demo.csv", index=False)
        summary = run_config(cfg, progress=False)
        assert not summary.failed and list(_results(out)["status"]) == ["processed", "processed"]
        assert all(slide_outputs(cfg, s, lab).heatmap(cfg).is_file() for s, lab in SLIDES.items())
        assert summary.n_encoded > (32 if mode == "warn" else 0)
    assert "features_check: warn - mixing them anyway" in caplog.text


def test_the_encoder_that_made_the_features_passes_and_agrees(make_fast_config, tmp_path):
    """Features made with the seeded encoder on a real slide, given back as a user's CLAM file
    (no attributes): the check passes and the fine pass equals the all-new-features one."""
    rows = [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}]
    a = make_fast_config(tmp_path / "a", rows, patching_arguments={"overlap": 0.5})
    assert not run_config(a, progress=False).failed
    out_a = slide_outputs(a, "CMU-1-Small-Region", "class_a")
    clam_file = tmp_path / "user.h5"
    with h5py.File(out_a.features_h5) as f, h5py.File(clam_file, "w") as g:
        g["features"], g["coords"] = f["features"][:], f["coords"][:]
    b = make_fast_config(tmp_path / "b", [{**rows[0], "features_path": str(clam_file)}],
                         patching_arguments={"overlap": 0.5})
    summary = run_config(b, progress=False)
    assert not summary.failed and summary.processed[0].note is None
    out_b = slide_outputs(b, "CMU-1-Small-Region", "class_a")
    with h5py.File(out_a.overlap_h5()) as fa, h5py.File(out_b.overlap_h5()) as fb, h5py.File(clam_file) as fu:
        ca, cb, bag = fa["coords"][:], fb["coords"][:], fu["coords"][:]
        both, ia, ib = np.intersect1d(ca.view([("", ca.dtype)] * 2), cb.view([("", cb.dtype)] * 2), return_indices=True)
        assert len(both) >= 0.8 * len(cb)                  # the bag's lattice: mostly the contour grid's patches
        assert np.allclose(fa["attention_raw"][:][ia], fb["attention_raw"][:][ib], atol=1e-5)
        pa, pb = fa["attention_scores"][:][ia], fb["attention_scores"][:][ib]
        assert np.mean(np.abs(pa - pb) > 1e-3) <= 0.02        # a 1e-7 attention change may move a tie by one rank
        new = len(np.setdiff1d(cb.view([("", cb.dtype)] * 2), bag.view([("", bag.dtype)] * 2)))
    assert summary.n_encoded == 16 + new                  # the check's sample + the patches the bag lacks


def test_calc_heatmap_false_without_a_fine_pass_h5_still_writes_the_blockmap(shared_dir, tmp_path):
    cfg = cptac_config(shared_dir, tmp_path, heatmap_arguments={"calc_heatmap": False})
    summary = run_config(cfg, progress=False)
    assert not summary.failed
    assert list(_results(tmp_path)["status"]) == ["processed (no fine-pass H5: heatmap skipped)"] * 2
    for sid, label in SLIDES.items():
        out = slide_outputs(cfg, sid, label)
        assert out.blockmap_h5.is_file() and out.blockmap_png.is_file() and not out.heatmap(cfg).exists()


def test_trident_layout_and_its_patch_size_level0(shared_dir, tmp_path, caplog):
    """features_dir with TRIDENT's features_{encoder}/{slide_id}.h5; a patch_size_level0 that
    disagrees with patch_size wins for that slide, with a note."""
    parisa = shared_dir / "mil" / "clam_demo_parisa"
    tdir = tmp_path / "trident" / "features_resnet50_trunc"
    for sid in SLIDES:
        with h5py.File(parisa / f"{sid}.h5") as f:
            write_trident_features_h5(tdir / f"{sid}.h5", f["features"][:], f["coords"][:], patch_size=256,
                                      patch_size_level0=512, level0_magnification=40, target_magnification=20)
    cfg = cptac_config(shared_dir, tmp_path, patching_arguments={"overlap": 0.0},
                       data_arguments={"features_dir": str(tmp_path / "trident")})
    pd.DataFrame({"slide_id": list(SLIDES), "label": list(SLIDES.values())}).to_csv(tmp_path / "demo.csv", index=False)
    with caplog.at_level("INFO", logger="heatmaps"):
        summary = run_config(cfg, progress=False)
    assert not summary.failed and summary.n_encoded == 0
    assert "records patch_size_level0 512; using patch_size 512 at patch_level 0 instead of 256" in caplog.text


def test_a_bag_whose_coords_lie_outside_the_slide_fails_that_slide(shared_dir, tmp_path):
    parisa = shared_dir / "mil" / "clam_demo_parisa"
    bad = tmp_path / "shifted.h5"
    with h5py.File(parisa / "C3L-01663-21.h5") as f, h5py.File(bad, "w") as g:
        g["features"], g["coords"] = f["features"][:], f["coords"][:] + 100_000
    cfg = cptac_config(shared_dir, tmp_path, patching_arguments={"overlap": 0.0})
    pd.DataFrame({"slide_id": ["C3L-01663-21", "C3L-03262-22"], "label": ["LSCC", "LUAD"],
                  "features_path": [str(bad), str(parisa / "C3L-03262-22.h5")]}).to_csv(tmp_path / "demo.csv", index=False)
    summary = run_config(cfg, progress=False)
    status = list(_results(tmp_path)["status"])
    assert status[0].startswith("failed: ") and "shifted.h5: 294 of 294 coords lie outside" in status[0]
    assert "check that the features belong to it" in status[0] and status[1] == "processed"
    assert len(summary.failed) == 1


def test_an_unreachable_encoder_fails_the_run_once_before_any_slide(make_fast_config, tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET50_TRUNC_CKPT_PATH", raising=False)
    rows = [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}, {"slide_id": "tcga-cr-7395-01a-01-ts1", "label": "class_b"}]
    cfg = make_fast_config(tmp_path, rows, encoder_arguments={"weights_path": None})
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="cannot fetch encoder weights .* set encoder_arguments.weights_path"):
        run_config(cfg, progress=False)
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "results").exists()                   # no slide was started


def test_a_style_only_change_re_renders_without_encoding(make_fast_config, tmp_path):
    rows = [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}]
    first = make_fast_config(tmp_path, rows, patching_arguments={"overlap": 0.5})
    assert run_config(first, progress=False).n_encoded > 0
    out = slide_outputs(first, "CMU-1-Small-Region", "class_a")
    old = out.heatmap(first).read_bytes()
    restyled = make_fast_config(tmp_path, rows, patching_arguments={"overlap": 0.5},
                                heatmap_arguments={"vis_level": -1, "save_orig": False, "cmap": "viridis", "alpha": 0.6})
    summary = run_config(restyled, progress=False)
    assert summary.n_encoded == 0 and not summary.failed
    new_path = out.heatmap(restyled)
    assert new_path.name.endswith("_a_0.6_l_-1_bi_0_-1.0_cmap_viridis.jpg") and new_path.is_file()
    assert out.heatmap(first).read_bytes() == old                # the other style's image is untouched
    assert json.loads(style_json_path(new_path).read_text())["cmap"] == "viridis"


def test_the_process_list_is_never_written(make_fast_config, tmp_path):
    rows = [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}, {"slide_id": "missing", "label": "class_a"}]
    cfg = make_fast_config(tmp_path, rows)
    before = (tmp_path / "process_list.csv").read_bytes()
    run_config(cfg, progress=False)
    assert (tmp_path / "process_list.csv").read_bytes() == before
    assert list(pd.read_csv(tmp_path / "results" / "process_list.csv")["status"])[0] == "processed"


def test_a_label_dict_that_disagrees_with_the_checkpoint_fails_the_run_before_any_slide(make_fast_config, tmp_path):
    rows = [{"slide_id": "CMU-1-Small-Region", "label": "a"}]
    cfg = make_fast_config(tmp_path, rows, data_arguments={"label_dict": {"a": 0, "b": 1, "c": 2}})
    with pytest.raises(ConfigError, match=r"label_dict .* names 3 classes but the checkpoint ckpt_clam_sb_seed0.pt has 2"):
        run_config(cfg, progress=False)
    assert not (tmp_path / "results").exists()


def test_a_segmentation_change_is_not_a_style_change(make_fast_config, tmp_path):
    """The fine pass depends on the tissue it is laid on: new segmentation parameters recompute it."""
    rows = [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}]
    first = make_fast_config(tmp_path, rows, patching_arguments={"overlap": 0.5})
    assert run_config(first, progress=False).n_encoded > 0
    stricter = make_fast_config(tmp_path, [{**rows[0], "sthresh": 40}], patching_arguments={"overlap": 0.5},
                                heatmap_arguments={"vis_level": -1, "save_orig": False, "alpha": 0.6})
    summary = run_config(stricter, progress=False)
    assert not summary.failed and summary.n_encoded > 0


def test_complete_outputs_of_another_checkpoint_are_recomputed(make_fast_config, tmp_path, shared_dir):
    """A rerun skips a slide whose outputs are complete only when this checkpoint made them."""
    rows = [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}]
    first = make_fast_config(tmp_path, rows)
    assert not run_config(first, progress=False).processed[0].skipped
    assert run_config(first, progress=False).processed[0].skipped                 # same model: skipped
    mb = shared_dir / "clam_reference" / "checkpoints" / "ckpt_clam_mb_seed0.pt"
    other = make_fast_config(tmp_path, rows, model_arguments={"ckpt_path": str(mb), "model_type": "clam_mb"})
    assert not run_config(other, progress=False).processed[0].skipped              # another model: recomputed
