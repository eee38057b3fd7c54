"""The seeds' own command lines, thin front ends on the YAML pipeline:

* ``generate_heatmaps.py`` / ``generate-heatmaps``: standard heatmaps of a cohort from TRIDENT
  feature files (here the real CPTAC bags of CLAM's demo, written in TRIDENT's layout) with CLAM's
  official demo checkpoint, on the reconstructed CPTAC slides (``real_geometry``);
* ``generate_heatmaps_highres.py``: the high-resolution flags of ``create-heatmaps`` (an ROI TIFF in
  the slide's geometry, the summary line naming the class);
* ``create-heatmaps-marugoto`` (and ``create-heatmaps -m``): two real slides on one colour scale.
"""
from __future__ import annotations

import configparser
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import openslide
import pandas as pd
import pytest

from wsi_core.formats import write_trident_features_h5

pytestmark = [pytest.mark.shared, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
CPTAC = {"C3L-01663-21": "LSCC", "C3L-03262-22": "LUAD"}     # slide -> true label (shared/mil/PROVENANCE.md)
HEATMAP = "{}_0.0_roi_0_blur_0_rs_1_bc_0_a_0.4_l_1_bi_0_-1.0.jpg"


def _reference(shared_dir: Path) -> Path:
    return shared_dir / "clam_reference" / "checkpoints"


def _trident_h5_dir(shared_dir: Path, out: Path) -> Path:
    """The CPTAC bags of CLAM's demo (``clam_demo_parisa``: 256-px patches at level 0, coords 256 px
    apart, no attributes) in TRIDENT's layout, plus one file whose slide does not exist."""
    d = out / "features_resnet50_trunc"
    d.mkdir(parents=True)
    for sid in [*CPTAC, "NO-SLIDE"]:
        with h5py.File(shared_dir / "mil/clam_demo_parisa" / f"{'C3L-01663-21' if sid == 'NO-SLIDE' else sid}.h5") as f:
            feats, coords = f["features"][:], f["coords"][:]
        assert np.diff(np.unique(coords[:, 1]))[:3].tolist() == [256, 256, 256]
        write_trident_features_h5(d / f"{sid}.h5", feats, coords, patch_size=256, patch_size_level0=256,
                                  level0_magnification=20, target_magnification=20)
    return d


def _generate(shared_dir: Path, h5_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python generate_heatmaps.py`` itself (the top-level script), as a user runs it."""
    argv = [sys.executable, str(REPO / "generate_heatmaps.py"), "--checkpoint",
            str(shared_dir / "mil/clam_demo/s_0_checkpoint.pt"), "--h5_dir", str(h5_dir),
            "--slide_dir", str(shared_dir / "slides/reconstructed/real_geometry"), "--slide_ext", ".tiff",
            "--output_dir", str(out), "--label_dict", "LUAD=0,LSCC=1", *extra]
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600, cwd=out.parent)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, shared_dir):
    tmp = tmp_path_factory.mktemp("cohort")
    h5_dir = _trident_h5_dir(shared_dir, tmp)
    ref = _reference(shared_dir)
    # today's pipeline encodes the fine-pass patches: seeded local weights (offline), 32-px inputs (fast)
    proc = _generate(shared_dir, h5_dir, tmp / "out", "--encoder_weights", str(ref / "resnet50_trunc_seed0.safetensors"),
                     "--set", "encoder_arguments.target_img_size=32", "--set", "heatmap_arguments.save_orig=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "out", h5_dir, proc.stderr


def test_generate_heatmaps_results_rows_equal_clams_probabilities(cohort, shared_dir):
    out, _, _ = cohort
    truth = json.loads((shared_dir / "mil/clam_demo_verification.json").read_text())
    rows = pd.read_csv(out / "results.csv")
    assert list(rows["slide_id"]) == sorted(CPTAC) and set(rows["status"]) == {"processed"}
    for _, row in rows.iterrows():
        t = truth[f"clam_demo_parisa/{row['slide_id']}"]
        assert row["bag_size"] == t["n_patches"]                  # the feature file is the bag
        assert row["Pred_0"] == CPTAC[row["slide_id"]]            # names from --label_dict
        probs = {row["Pred_0"]: row["p_0"], row["Pred_1"]: row["p_1"]}
        assert (round(probs["LUAD"], 4), round(probs["LSCC"], 4)) == tuple(t["p_LUAD_p_LSCC"])


def test_generate_heatmaps_writes_heatmaps_blockmaps_and_one_warning_line(cohort, shared_dir):
    out, h5_dir, err = cohort
    for sid in CPTAC:
        assert (out / "results" / "Unspecified" / HEATMAP.format(sid)).stat().st_size > 0
        raw = out / "raw" / "results" / "Unspecified" / sid
        with h5py.File(raw / f"{sid}_blockmap.h5") as f, h5py.File(h5_dir / f"{sid}.h5") as g:
            np.testing.assert_array_equal(f["coords"][:], g["coords"][:])     # scored on the given bag
        assert (raw / f"{sid}_blockmap.png").is_file()
    warnings = [ln for ln in err.splitlines() if "has no slide" in ln]
    assert warnings == [f"1 feature file in {h5_dir} has no slide {{slide_id}}.tiff in "
                        f"{shared_dir / 'slides/reconstructed/real_geometry'}, skipped: NO-SLIDE"]
    assert not (out / "results" / "Unspecified" / HEATMAP.format("NO-SLIDE")).exists()


def _n_encoded(err: str) -> int:
    return int(re.search(r"2 slides processed, 0 failed, (\d+) patches encoded", err).group(1))


def test_generate_heatmaps_encodes_nothing_with_a_complete_bag(cohort):
    """At overlap 0 the fine pass is the bag: every patch takes the user's features."""
    _, _, err = cohort
    assert _n_encoded(err) == 0


def test_generate_heatmaps_limit_dry_run_and_bad_input(tmp_path, shared_dir):
    h5_dir = _trident_h5_dir(shared_dir, tmp_path)
    proc = _generate(shared_dir, h5_dir, tmp_path / "out", "--limit", "1", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert "config generate-heatmaps: 1 slides in the command line" in proc.stdout
    assert "run   C3L-01663-21:" in proc.stdout and "C3L-03262-22" not in proc.stdout
    assert not (tmp_path / "out").exists()
    proc = _generate(shared_dir, h5_dir, tmp_path / "out", "--slide_ext", ".svs")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --slide_dir {shared_dir / 'slides/reconstructed/real_geometry'}: no slide {{slide_id}}.svs for any "
        f"of the 3 feature files in {h5_dir} (e.g. C3L-01663-21.svs); check --slide_dir and --slide_ext")


def test_feature_patch_size_from_trident_and_clam_attributes(tmp_path):
    from heatmaps.cohort_cli import feature_patch_size
    from wsi_core.errors import FeatureFileError
    from wsi_core.formats import write_features_h5

    feats, coords = np.zeros((2, 4), np.float32), np.array([[0, 0], [512, 0]])
    a = write_trident_features_h5(tmp_path / "a.h5", feats, coords, patch_size=256, patch_size_level0=512,
                                  level0_magnification=40, target_magnification=20)
    b = write_features_h5(tmp_path / "b.h5", feats, coords)
    assert feature_patch_size([a]) == 512 and feature_patch_size([b]) == 256
    c = write_trident_features_h5(tmp_path / "c.h5", feats, coords, patch_size=256, patch_size_level0=256,
                                  level0_magnification=20, target_magnification=20)
    with pytest.raises(FeatureFileError, match=r"feature files disagree on the patch size: .*a.h5 512 px, .*c.h5 256 px"):
        feature_patch_size([a, c])


# ------------------------------------------------------------------ generate_heatmaps_highres.py


def test_highres_roi_tiff_in_the_slide_geometry_and_the_summary_names_the_class(tmp_path, shared_dir, caplog):
    from heatmaps.cli import main_highres

    ref, slide = _reference(shared_dir), shared_dir / "slides/CMU-1-Small-Region.svs"
    out = tmp_path / "cmu.tiff"
    roi = (700, 900, 1500, 1700)
    argv = ["--checkpoint", str(ref / "ckpt_clam_sb_seed0.pt"), "--slide", str(slide), "--output", str(out),
            "--encoder_weights", str(ref / "resnet50_trunc_seed0.safetensors"), "--set", "encoder_arguments.target_img_size=32",
            "--overlap", "0.5", "--roi", ",".join(map(str, roi)), "--label_dict", "benign=0,tumour=1"]
    with caplog.at_level(logging.INFO, logger="heatmaps"):
        assert main_highres(argv) == 0
    summary = [r.getMessage() for r in caplog.records if "heatmap:" in r.getMessage()]
    assert len(summary) == 1 and re.fullmatch(
        rf"CMU-1-Small-Region: predicted (benign|tumour) \(p=0\.\d{{4}}\); heatmap: {re.escape(str(out))} "
        rf"\(patches: {re.escape(str(tmp_path / 'cmu_coords.h5'))}; intermediate files: {re.escape(str(tmp_path / 'cmu_work'))}\)",
        summary[0]), summary
    with openslide.OpenSlide(str(out)) as tif:
        assert tif.level_dimensions[0] == (2220, 2967)                     # the slide's geometry at vis_level 0
        assert "roi 700,900,1500,1700 (level-0 px" in tif.properties["openslide.comment"]
        rgba = np.asarray(tif.read_region((0, 0), 0, (2220, 2967)))
    assert (rgba[:768, :, 3] == 0).all() and (rgba[1792:, :, 3] == 0).all()   # whole tiles outside: transparent
    assert (rgba[900:1700, 700:1500, 3] == 255).mean() > 0.9              # inside: all but background tiles
    # the ROI-sized render of the same scores (what an ROI TIFF used to be) sits at the ROI's place
    png = tmp_path / "roi.png"
    assert main_highres(["--scores", str(tmp_path / "cmu_coords.h5"), "--slide", str(slide), "--output", str(png),
                         "--roi", ",".join(map(str, roi)), "--quiet"]) == 0
    from PIL import Image

    old = np.asarray(Image.open(png).convert("RGB"), np.int16)
    assert old.shape == (800, 800, 3)
    shown = rgba[900:1700, 700:1500, 3] == 255
    assert np.abs(rgba[900:1700, 700:1500, :3].astype(np.int16)[shown] - old[shown]).mean() < 2.0  # JPEG q90 tiles


def test_highres_without_names_says_class_i_of_n():
    from heatmaps.highres import class_summary

    assert class_summary(1, np.array([0.25, 0.75]), {}) == "class 1 of 2 (p=0.7500)"
    assert class_summary(0, np.array([0.9, 0.1]), {0: "LUAD", 1: "LSCC"}) == "LUAD (p=0.9000)"


# ------------------------------------------------------------------ create-heatmaps-marugoto


TWO = ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs")


def test_marugoto_maps_of_two_slides_share_one_scale(tmp_path, shared_dir):
    from heatmaps.marugoto_cli import main as marugoto_main

    ref = _reference(shared_dir)
    out = tmp_path / "maps"
    argv = ["-m", str(ref / "ckpt_clam_sb_seed0.pt"), "-o", str(out), "-t", "tumour", "--label_dict", "benign=0,tumour=1",
            "--encoder_weights", str(ref / "resnet50_trunc_seed0.safetensors"), "--set", "encoder_arguments.target_img_size=32",
            "--overlap", "0", "--patch_size", "512", "--vis_level", "-1", "--att-cmap", "magma", "--score-threshold", "0.9",
            "--quiet", *(str(shared_dir / "slides" / s) for s in TWO)]
    assert marugoto_main(argv) == 0
    prod = out / "results" / "Unspecified"
    scales = {}
    for name in TWO:
        sid = Path(name).stem
        for kind in ("attention", "score_tumour"):
            assert (prod / f"{sid}_{kind}.jpg").stat().st_size > 0 and (prod / f"{sid}_{kind}_colorbar.png").is_file()
            scales[sid, kind] = json.loads((prod / f"{sid}_{kind}_scale.json").read_text())
    for kind in ("attention", "score_tumour"):
        a, b = (dict(scales[Path(n).stem, kind]) for n in TWO)
        for d in (a, b):
            del d["slide_id"], d["image"]
        assert a == b and a["source"] == "run" and a["n_slides"] == 2
    assert scales["CMU-1-Small-Region", "attention"]["cmap"] == "magma"
    assert scales["CMU-1-Small-Region", "score_tumour"]["score_threshold"] == 0.9
    rows = pd.read_csv(out / "results.csv")
    assert sorted(rows["slide_id"]) == sorted(TWO) and set(rows["status"]) == {"processed"}


def test_create_heatmaps_accepts_the_marugoto_flags(tmp_path, shared_dir, capsys):
    from heatmaps.cli import main as cli_main

    ref = _reference(shared_dir)
    slides = [str(shared_dir / "slides" / s) for s in TWO]
    base = ["-m", str(ref / "ckpt_clam_sb_seed0.pt"), "-o", str(tmp_path / "maps")]
    assert cli_main([*base, "-t", "1", "--no-pool", "--cache-dir", str(tmp_path / "cache"), "--dry-run", *slides]) == 0
    plan = capsys.readouterr().out
    assert "config create-heatmaps-marugoto: 2 slides in the command line" in plan
    assert "run   CMU-1-Small-Region: " in plan and "run   tcga-cr-7395-01a-01-ts1: " in plan
    assert not (tmp_path / "maps").exists()
    assert cli_main([*base, "-t", "2", "--dry-run", *slides]) == 1
    assert capsys.readouterr().err.strip() == (f"error: -t 2: not a class of {ref / 'ckpt_clam_sb_seed0.pt'} "
                                               "(2 classes: indices 0-1); give --label_dict name=idx,... to use names")
    assert cli_main([*base, "-t", "LUAD", "--label_dict", "benign=0,tumour=1", "--dry-run", *slides]) == 1
    assert "error: -t LUAD: not a class of" in capsys.readouterr().err
    assert cli_main([*base, "--dry-run", *slides]) == 2
    assert "Marugoto maps need -t TRUE_CLASS" in capsys.readouterr().err


def test_marugoto_config_maps_each_flag_to_its_key(tmp_path, shared_dir):
    from heatmaps.marugoto_cli import build_marugoto_config, build_parser
    from models.checkpoints import load_mil_checkpoint

    ref = _reference(shared_dir)
    args = build_parser().parse_args(
        ["-m", str(ref / "ckpt_clam_sb_seed0.pt"), "-o", str(tmp_path), "-t", "0", "--no-pool", "--mask-threshold", "220",
         "--att-upper-threshold", "0.99", "--att-lower-threshold", "0.05", "--score-threshold", "0.8",
         "--att-cmap", "viridis", "--score-cmap", "bwr", "--cache-dir", str(tmp_path / "c"), "a.svs"])
    cfg = build_marugoto_config(args, load_mil_checkpoint(args.model, model_type="clam_sb"), [str(tmp_path)])
    h = cfg.heatmap_arguments
    assert (h.score_maps, h.normalize_across_slides, h.true_class) == (True, True, 0)
    assert (h.mask_threshold, h.att_upper_threshold, h.att_lower_threshold, h.score_threshold) == (220, 0.99, 0.05, 0.8)
    assert (h.att_cmap, h.score_cmap) == ("viridis", "bwr")
    assert cfg.encoder_arguments.fully_convolutional and cfg.exp_arguments.cache_dir == str(tmp_path / "c")


# ------------------------------------------------------------------ installed as commands


def test_seed_scripts_are_installed_and_answer_help(tmp_path):
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    modules = cfg["options"]["py_modules"].split()
    scripts = dict(line.split(" = ") for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines())
    want = {"create-heatmaps": "create_heatmaps", "generate-heatmaps": "generate_heatmaps",
            "generate-heatmaps-highres": "generate_heatmaps_highres", "create-heatmaps-marugoto": "create_heatmaps_marugoto"}
    for command, module in want.items():
        assert scripts[command] == f"{module}:main" and module in modules
        res = subprocess.run([sys.executable, str(REPO / f"{module}.py"), "--help"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=120, cwd=tmp_path)
        assert res.returncode == 0 and f"usage: {command}" in res.stdout, (command, res.stderr[-500:])
    res = subprocess.run([sys.executable, str(REPO / "generate_heatmaps_highres.py"), "--help"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    help_text = " ".join(res.stdout.split())
    assert "{output stem}_work/ beside it; a rerun reuses them; delete the folder once the heatmap is written" in help_text
    assert "(default 0.5 here;" in help_text
