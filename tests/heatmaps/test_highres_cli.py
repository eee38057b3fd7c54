"""The high-resolution command line: --checkpoint/--slide/--output (a pyramidal TIFF that OpenSlide
opens with the slide's geometry, plus _coords.h5) and --scores re-rendering without a model."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import openslide
import pytest

from heatmaps.cli import main as cli_main

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.fixture
def ref(shared_dir):
    return shared_dir / "clam_reference"


def _args(ref, slide, out, *extra):
    ck = ref / "checkpoints"
    return ["--checkpoint", str(ck / "ckpt_clam_sb_seed0.pt"), "--slide", str(slide), "--output", str(out),
            "--encoder_weights", str(ck / "resnet50_trunc_seed0.safetensors"), "--quiet",
            "--set", "encoder_arguments.target_img_size=32", *extra]


def test_checkpoint_to_pyramidal_tiff(ref, slides_dir, tmp_path):
    out = tmp_path / "cmu.tiff"
    assert cli_main(_args(ref, slides_dir / "CMU-1-Small-Region.svs", out, "--overlap", "0.5", "--raw_scores")) == 0
    with openslide.OpenSlide(str(out)) as tif:
        assert tif.level_dimensions[0] == (2220, 2967)
        assert float(tif.properties["openslide.mpp-x"]) == pytest.approx(0.499, rel=1e-3)
        assert tif.level_count >= 2
    with h5py.File(tmp_path / "cmu_coords.h5") as f:
        coords, scores = f["coords"][:], f["attention_scores"][:]
        assert coords.shape == (121, 2) and scores.shape == (121, 1)        # CLAM's 0.5-overlap grid
        assert f.attrs["step_size"] == 128 and f.attrs["patch_size"] == 256 and f.attrs["encoder"] == "resnet50_trunc"
    assert (tmp_path / "cmu_scores.tif").is_file() or (tmp_path / "cmu_scores.tiff").is_file()


def test_scores_rerender_png_equals_tiff_level(ref, slides_dir, tmp_path):
    raw = ref / "real_sb/heatmap_raw_results/REAL_SB/class_b/tcga-cr-7395-01a-01-ts1"
    slide = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    scores = str(raw / "tcga-cr-7395-01a-01-ts1_0.5_roi_False.h5")
    png, tif, empty = tmp_path / "t.png", tmp_path / "t.tiff", tmp_path / "e.tiff"
    argv = ["--scores", scores, "--slide", str(slide), "--vis_level", "1", "--quiet"]
    assert cli_main([*argv, "--output", str(png)]) == 0
    assert cli_main([*argv, "--output", str(tif), "--tiff_background", "slide"]) == 0
    assert cli_main([*argv, "--output", str(empty)]) == 0                 # default: empty background tiles
    from PIL import Image

    a = np.asarray(Image.open(png), np.int16)
    with openslide.OpenSlide(str(tif)) as t:
        b = np.asarray(t.read_region((0, 0), 0, t.level_dimensions[0]).convert("RGB"), np.int16)
    assert a.shape == b.shape == (1783, 2221, 3)
    assert np.abs(a - b).mean() < 2.0                                   # the TIFF tiles are JPEG q90
    with openslide.OpenSlide(str(empty)) as t:
        e = np.asarray(t.read_region((0, 0), 0, t.level_dimensions[0]))
    shown = e[..., 3] == 255
    assert 0.2 < shown.mean() < 1.0 and (e[~shown, 3] == 0).all()      # background tiles transparent
    assert np.abs(a[shown] - e[shown][:, :3]).mean() < 2.0              # tissue tiles: the same picture


def test_scores_rerender_runs_without_torch(ref, slides_dir, tmp_path):
    """--scores needs no model: the command never imports torch (0.6 GB of resident memory)."""
    raw = ref / "real_sb/heatmap_raw_results/REAL_SB/class_b/tcga-cr-7395-01a-01-ts1"
    argv = ["--scores", str(raw / "tcga-cr-7395-01a-01-ts1_blockmap.h5"), "--output", str(tmp_path / "b.jpg"),
            "--slide", str(slides_dir / "tcga-cr-7395-01a-01-ts1.svs"), "--vis_level", "1", "--quiet"]
    code = ("import sys; from heatmaps.cli import main; rc = main(sys.argv[1:]); "
            "sys.exit(rc or 10 * ('torch' in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    assert (tmp_path / "b.jpg").stat().st_size > 0


def test_bad_high_res_input(ref, slides_dir, tmp_path, capsys):
    slide = slides_dir / "CMU-1-Small-Region.svs"
    cases = [
        (_args(ref, slide, tmp_path / "x.bmp"), "unsupported extension '.bmp'; use .tiff"),
        (_args(ref, slide, tmp_path / "x.tiff", "--overlap", "1.0"), "patching_arguments.overlap = 1.0"),
        (_args(ref, slide, tmp_path / "x.tiff", "--roi", "9000,9000,9500,9500"), "outside"),
        (_args(ref, slide, tmp_path / "x.tiff", "--roi", "1,2,3"), "expected four integers"),
        (["--scores", str(tmp_path / "none.h5"), "--slide", str(slide), "--output", str(tmp_path / "y.png")], "not a score file"),
        (["--checkpoint", "a.pt", "--scores", "b.h5"], "not both"),
    ]
    for argv, msg in cases:
        assert cli_main(argv) == 1, argv
        err = capsys.readouterr().err
        assert msg in err, (argv, err)


@pytest.mark.parametrize("dim,encoder", [(1536, "uni_v2"), (1024, "resnet50_trunc"), (768, "ctranspath"),
                                         (512, "conch_v1"), (2560, "virchow2")])
def test_auto_feature_extractor_follows_the_checkpoint_width(slides_dir, tmp_path, dim, encoder):
    import argparse

    import torch

    from heatmaps.cli import build_parser, highres_request
    from heatmaps.highres import build_config
    from models import create_mil_model
    from models.checkpoints import load_mil_checkpoint

    ckpt = tmp_path / f"clam_{dim}.pt"
    torch.save(create_mil_model("clam_sb", n_classes=3, in_dim=dim).state_dict(), ckpt)
    args = build_parser().parse_args(["--checkpoint", str(ckpt), "--slide", str(slides_dir / "CMU-1-Small-Region.svs"),
                                      "--output", str(tmp_path / "o.tiff")])
    assert isinstance(args, argparse.Namespace)
    cfg = build_config(highres_request(args), load_mil_checkpoint(ckpt, model_type="clam_sb"))
    assert cfg.encoder_arguments.model_name == encoder
    assert cfg.exp_arguments.n_classes == 3 and cfg.model_arguments.embed_dim == dim


def test_unknown_checkpoint_width_lists_the_encoders(slides_dir, tmp_path, capsys):
    import torch

    from models import create_mil_model

    ckpt = tmp_path / "clam_384.pt"
    torch.save(create_mil_model("clam_sb", n_classes=2, in_dim=384).state_dict(), ckpt)
    code = cli_main(["--checkpoint", str(ckpt), "--slide", str(slides_dir / "CMU-1-Small-Region.svs"),
                     "--output", str(tmp_path / "o.tiff")])
    err = capsys.readouterr().err
    assert code == 1 and "384-d" in err and "uni_v2" in err and "virchow2" in err


def test_geojson_beside_the_one_slide_output_and_the_rerender(ref, slides_dir, tmp_path):
    import json

    out = tmp_path / "cmu.png"
    assert cli_main(_args(ref, slides_dir / "CMU-1-Small-Region.svs", out, "--overlap", "0.5", "--vis_level", "0",
                          "--geojson", "--dsa")) == 0
    tiles = json.loads((tmp_path / "cmu_tiles.geojson").read_text())
    dsa = json.loads((tmp_path / "cmu_dsa_annotation.json").read_text())          # moved beside the output too
    assert dsa["attributes"]["wsi_heatmaps"]["n_patches"] == 121
    with h5py.File(tmp_path / "cmu_coords.h5") as f:
        assert len(tiles["features"]) == len(f["coords"]) == 121
    assert (tmp_path / "cmu_tissue_annotations.geojson").is_file()
    again = tmp_path / "again.png"
    assert cli_main(["--scores", str(tmp_path / "cmu_coords.h5"), "--slide", str(slides_dir / "CMU-1-Small-Region.svs"),
                     "--output", str(again), "--vis_level", "0", "--geojson", "--quiet"]) == 0
    re_tiles = json.loads((tmp_path / "again_tiles.geojson").read_text())
    assert [f["geometry"] for f in re_tiles["features"]] == [f["geometry"] for f in tiles["features"]]
    a = [f["properties"]["measurements"]["attention_percentile"] for f in tiles["features"]]
    b = [f["properties"]["measurements"]["attention_percentile"] for f in re_tiles["features"]]
    assert np.allclose(a, b, atol=1e-4)


def test_dsa_beside_the_rerender_of_a_slide_without_mpp(ref, slides_dir, tmp_path, caplog):
    """tcga-cr-7395 records no mpp: the annotation is still written, in level-0 px, and says so."""
    import json

    from tests.wsi_core.test_dsa import heat_points

    raw = ref / "real_sb/heatmap_raw_results/REAL_SB/class_b/tcga-cr-7395-01a-01-ts1"
    scores = raw / "tcga-cr-7395-01a-01-ts1_0.5_roi_False.h5"
    out = tmp_path / "t.png"
    with caplog.at_level("WARNING"):
        assert cli_main(["--scores", str(scores), "--slide", str(slides_dir / "tcga-cr-7395-01a-01-ts1.svs"),
                         "--output", str(out), "--vis_level", "1", "--dsa", "--quiet"]) == 0
    assert "no mpp" in caplog.text
    doc = json.loads((tmp_path / "t_dsa_annotation.json").read_text())
    assert "no mpp" in doc["description"] and doc["attributes"]["wsi_heatmaps"]["mpp"] is None
    with h5py.File(scores) as f:
        coords, pct = f["coords"][:], f["attention_scores"][:, 0]
    half = doc["attributes"]["wsi_heatmaps"]["patch_size_level0"][0] / 2
    got = heat_points(doc["elements"][0])
    want = {(x + half, y + half): v for (x, y), v in zip(coords.tolist(), pct.tolist()) if v}
    assert got.keys() == want.keys() and np.allclose([got[k] for k in want], list(want.values()), atol=1e-4)
