"""Process lists: CLAM columns, presets, defaults, slide paths, labels and ROIs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from heatmaps.config import DataArguments
from heatmaps.layout import slide_outputs
from heatmaps.process_list import load_preset, read_process_list, slide_task
from heatmaps.config import parse_config
from wsi_core.errors import ConfigError, RoiError, SlideOpenError


def _slides(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "slides"
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"")
    return d


def test_defaults_and_preset_fill_missing_columns(tmp_path):
    d = _slides(tmp_path, "a.svs", "b.svs")
    pl = tmp_path / "pl.csv"
    pd.DataFrame({"slide_id": ["a", "b"], "label": ["LUAD", "LSCC"], "sthresh": [20, None]}).to_csv(pl, index=False)
    df, path = read_process_list(DataArguments(data_dir=str(d), process_list=str(pl), preset="presets/bwh_biopsy.csv",
                                               label_dict={"LUAD": 0, "LSCC": 1}))
    assert path == pl
    assert list(df["sthresh"]) == [20, 15]          # per-slide override, else preset
    assert list(df["a_t"]) == [1, 1] and list(df["line_thickness"]) == [50, 50]
    assert list(df["process"]) == [1, 1] and list(df["status"]) == ["tbp", "tbp"]
    assert load_preset(None)["a_t"] == 50.0          # CLAM default without a preset


def test_bare_process_list_name_is_looked_up_in_heatmaps_process_lists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "heatmaps/process_lists").mkdir(parents=True)
    pd.DataFrame({"slide_id": ["a"]}).to_csv(tmp_path / "heatmaps/process_lists/mine.csv", index=False)
    df, path = read_process_list(DataArguments(data_dir=".", process_list="mine.csv"))
    assert path.name == "mine.csv" and list(df["slide_id"]) == ["a"]
    with pytest.raises(ConfigError, match=r"data_arguments.process_list 'other.csv' not found"):
        read_process_list(DataArguments(data_dir=".", process_list="other.csv"))


def test_null_process_list_lists_data_dir_cohorts(tmp_path):
    a = _slides(tmp_path / "A", "s1.svs", "notes.txt")
    b = _slides(tmp_path / "B", "s2.svs")
    df, path = read_process_list(DataArguments(data_dir={"A": str(a), "B": str(b)}, data_dir_key="cohort"))
    assert path is None and list(df["slide_id"]) == ["s1", "s2"] and list(df["cohort"]) == ["A", "B"]
    row = df.iloc[1]
    task = slide_task(row, DataArguments(data_dir={"A": str(a), "B": str(b)}, data_dir_key="cohort"), use_roi=False)
    assert task.slide_path == b / "s2.svs" and task.label == "Unspecified"


def test_slide_task_errors_name_slide_and_fix(tmp_path):
    d = _slides(tmp_path, "a.svs")
    args = DataArguments(data_dir=str(d), label_dict={"LUAD": 0, "LSCC": 1})
    df, _ = read_process_list(DataArguments(data_dir=str(d)))
    row = df.iloc[0].copy()
    row["label"] = "ADC"
    with pytest.raises(ConfigError, match=r"slide a: label 'ADC' is not in data_arguments.label_dict \(LUAD, LSCC\)"):
        slide_task(row, args, use_roi=False)
    row["label"] = "1"
    task = slide_task(row, args, use_roi=False)
    assert task.grouping == "LSCC" and task.label == 1
    with pytest.raises(RoiError, match=r"slide a: use_roi is true but the process list has no x1,y1,x2,y2"):
        slide_task(row, args, use_roi=True)
    row["slide_id"] = "missing"
    with pytest.raises(SlideOpenError, match=r"slide missing: file not found: .*missing.svs; check data_arguments.data_dir"):
        slide_task(row, args, use_roi=False)
    with pytest.raises(ConfigError, match=r"column 'source' = None is not a key of data_arguments.data_dir"):
        slide_task(df.iloc[0], DataArguments(data_dir={"x": str(d)}), use_roi=False)


def test_output_names_match_clam_reference(clam_reference_dir, tmp_path):
    """Our names for every file of CLAM's reference run (real_sb) are CLAM's names."""
    cfg = parse_config({"exp_arguments": {"save_exp_code": "REAL_SB", "raw_save_dir": "R", "production_save_dir": "P"},
                        "model_arguments": {"ckpt_path": "x"},
                        "heatmap_arguments": {"vis_level": 0, "save_orig": True}})
    run = clam_reference_dir / "real_sb"
    out = slide_outputs(cfg, "tcga-cr-7395-01a-01-ts1", "class_b")
    for p in (out.features_h5, out.features_pt, out.blockmap_h5, out.overlap_h5(), out.mask_jpg, out.mask_pkl):
        assert (run / "heatmap_raw_results" / p.relative_to("R")).is_file(), p
    for p in (out.heatmap(cfg), out.orig(0, "jpg")):
        assert (run / "heatmap_production_results" / p.relative_to("P")).is_file(), p
    png = out.sample_png("class_b", 0, "topk_high_attention", 0, 3864, 3072, 100.0)
    assert (run / "heatmap_production_results" / png.relative_to("P")).is_file()


@pytest.mark.parametrize("name,a_t,a_h,line", [("bwh_biopsy", 1, 1, 50), ("bwh_resection", 100, 16, 150),
                                               ("tcga", 16, 4, 250)])
def test_clam_presets_ship(name, a_t, a_h, line):
    preset = load_preset(f"presets/{name}.csv")
    assert (preset["a_t"], preset["a_h"], preset["line_thickness"]) == (a_t, a_h, line)


@pytest.mark.parametrize("slide_id,area", [("CMU-1-Small-Region", "8.99"), ("tcga-cr-7395-01a-01-ts1", "37.6")])
def test_no_tissue_with_clam_defaults_names_the_area_and_a_preset(slides_dir, slide_id, area):
    """CLAM's defaults (no preset: a_t 50) keep nothing of these small slides; the message says how
    large the largest piece was and which shipped preset keeps it."""
    from heatmaps.process_list import initialize_process_list, preset_a_t_hints
    from wsi_core.errors import NoTissueError
    from wsi_core.slide import open_slide
    from wsi_core.tissue import segment_tissue

    assert preset_a_t_hints() == (("preset bwh_biopsy", 1.0), ("preset tcga", 16.0), ("preset bwh_resection", 100.0))
    df = initialize_process_list(pd.DataFrame({"slide_id": [slide_id]}), load_preset(None))
    task = slide_task(df.iloc[0], DataArguments(data_dir=str(slides_dir)), use_roi=False)
    with open_slide(task.slide_path) as slide, pytest.raises(NoTissueError) as ei:
        segment_tissue(slide, task.seg_params)
    msg = str(ei.value)
    assert f"the largest piece had area {area} (a_t units: 512² level-0 px) and a_t=50 rejected it" in msg
    assert f"an a_t below {area} keeps it, e.g. preset bwh_biopsy (a_t 1)" in msg
    assert ("preset tcga (a_t 16)" in msg) == (float(area) > 16) and "bwh_resection" not in msg
