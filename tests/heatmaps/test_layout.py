"""heatmaps.layout: every output path and file name (CLAM's exactly), in one module."""
from __future__ import annotations

from pathlib import Path

import pytest

from heatmaps.config import parse_config
from heatmaps.layout import (class_map_name, colorbar_path, coords_h5_path, effective_config_path, highres_work_dir,
                             results_csv_path, scale_json_path, scores_tiff_path, slide_outputs)
from wsi_core.formats import score_file_kind


def _cfg(tmp_path, **heat):
    return parse_config({"exp_arguments": {"save_exp_code": "EXP", "raw_save_dir": str(tmp_path / "raw"),
                                           "production_save_dir": str(tmp_path / "prod"),
                                           "results_dir": str(tmp_path / "res")},
                         "model_arguments": {"ckpt_path": "m.pt"}, "heatmap_arguments": heat}, source="t")


def test_clam_names(tmp_path):
    cfg = _cfg(tmp_path, vis_level=2, alpha=0.5)
    out = slide_outputs(cfg, "s1", "tumor")
    raw = tmp_path / "raw" / "EXP" / "tumor" / "s1"
    assert out.features_h5 == raw / "s1.h5" and out.features_pt == raw / "s1.pt"
    assert out.blockmap_h5 == raw / "s1_blockmap.h5" and out.overlap_h5() == raw / "s1_0.5_roi_False.h5"
    assert out.mask_jpg.name == "s1_mask.jpg" and out.blockmap_png.name == "s1_blockmap.png"
    assert out.heatmap(cfg) == tmp_path / "prod" / "EXP" / "tumor" / "s1_0.5_roi_0_blur_0_rs_1_bc_0_a_0.5_l_2_bi_0_-1.0.jpg"
    assert out.orig(2, "jpg").name == "s1_orig_2.jpg"
    assert out.sample_png("tumor", 1, "topk", 0, 256, 512, 99.5) == \
        tmp_path / "prod" / "EXP" / "sampled_patches" / "label_tumor_pred_1" / "topk" / "0_s1_x_256_y_512_a_99.500.png"
    assert out.state_json == raw / "s1_state.json"
    assert out.class_map("LUAD", "score", "png") == tmp_path / "prod" / "EXP" / "tumor" / "s1_score_LUAD.png"
    assert effective_config_path(cfg) == tmp_path / "raw" / "EXP" / "config.yaml"
    assert results_csv_path(cfg, Path("lists/cohort.csv")) == tmp_path / "res" / "cohort.csv"
    assert results_csv_path(cfg, None) == tmp_path / "res" / "EXP.csv"


def test_companions_and_kinds(tmp_path):
    out = tmp_path / "slide_heatmap.tiff"
    assert coords_h5_path(out).name == "slide_heatmap_coords.h5"
    assert scores_tiff_path(out).name == "slide_heatmap_scores.tif"
    assert highres_work_dir(out) == tmp_path / "slide_heatmap_work"
    img = tmp_path / "s1_score_a.png"
    assert colorbar_path(img).name == "s1_score_a_colorbar.png" and scale_json_path(img).name == "s1_score_a_scale.json"
    assert score_file_kind("x/s1_blockmap.h5") == "blockmap"
    assert score_file_kind("x/s1_0.9_roi_True.h5") == "fine_pass"
    assert score_file_kind("x/s1_heatmap_coords.h5") == "coords"
    assert score_file_kind("x/other.h5") is None


def test_class_map_names():
    assert class_map_name("s1", "tumour", "score") == "s1_score_tumour.jpg"
    assert class_map_name("s1", "high grade/G3", "score", "png") == "s1_score_high_grade_G3.png"
    assert class_map_name("s1", None, "attention", ".tiff") == "s1_attention.tiff"
    assert class_map_name("s1", "b", "attention") == "s1_attention_b.jpg"
    with pytest.raises(ValueError, match="needs a class name"):
        class_map_name("s1", None, "score")
    with pytest.raises(ValueError, match="kind must be one of"):
        class_map_name("s1", "a", "probability")
