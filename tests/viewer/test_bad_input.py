"""The issue's bad inputs: each refused with one line naming the file and the fix (CLI and routes)."""
from __future__ import annotations

import socket

import numpy as np
import pytest

from wsi_core.errors import ConfigError, FeatureFileError, SlideOpenError
from wsi_core.formats import read_scores, write_scores
from wsi_core.io import write_h5
from viewer.cli import main, serve
from viewer.registry import Registry


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("view-heatmaps: "), err
    return err


def test_tiff_of_another_size_is_refused_with_the_score_file_offer(slides_dir, heatmap_tiff, capsys):
    assert main(["--slide", str(slides_dir / "tcga-cr-7395-01a-01-ts1.svs"), "--heatmap", str(heatmap_tiff),
                 "--port", "0"]) == 2
    err = _one_line(capsys)
    assert "2220x2967" in err and "4443x3567" in err and "score file" in err and heatmap_tiff.name in err


def test_score_coords_outside_the_slide(cmu_slide, clam_fine, tmp_path, capsys):
    sf = read_scores(clam_fine)
    bad = write_scores(tmp_path / "shifted.h5", sf.scores, sf.coords + np.array([2000, 0]), attrs={"patch_size": 256})
    with pytest.raises(FeatureFileError, match="outside slide CMU-1-Small-Region"):
        Registry.single(cmu_slide, bad)
    assert main(["--slide", str(cmu_slide), "--heatmap", str(bad), "--port", "0"]) == 2
    assert "shifted.h5" in _one_line(capsys)


def test_score_file_without_attention_scores(cmu_slide, tmp_path, capsys):
    feats = write_h5(tmp_path / "features.h5", {"coords": np.zeros((3, 2), np.int64),
                                                 "features": np.zeros((3, 4), np.float32)})
    assert main(["--slide", str(cmu_slide), "--heatmap", str(feats), "--port", "0"]) == 2
    err = _one_line(capsys)
    assert "features.h5" in err and "attention_scores" in err


def test_score_file_without_patch_size_asks_for_it(cmu_slide, clam_fine, capsys):
    assert main(["--slide", str(cmu_slide), "--heatmap", str(clam_fine), "--port", "0"]) == 2
    assert "--patch-size" in _one_line(capsys)


def test_slide_openslide_cannot_open(slides_dir, clam_fine, capsys):
    bad = slides_dir / "unsupported" / "kidney-48-5.tif"
    with pytest.raises(SlideOpenError):
        Registry.single(bad, clam_fine, patch_size=256)
    assert main(["--slide", str(bad), "--heatmap", str(clam_fine), "--patch-size", "256", "--port", "0"]) == 2
    assert "kidney-48-5.tif" in _one_line(capsys)


def test_port_in_use(cmu_slide, clam_fine, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}.*--port"):
            serve(Registry.single(cmu_slide, clam_fine, patch_size=256), "127.0.0.1", port)
        assert main(["--slide", str(cmu_slide), "--heatmap", str(clam_fine), "--patch-size", "256",
                     "--port", str(port)]) == 2
        assert "in use" in _one_line(capsys)


def test_missing_arguments_and_host_warning(capsys, caplog):
    assert main([]) == 2
    assert "--slide SLIDE --heatmap HEATMAP" in _one_line(capsys)
    assert main(["--host", "0.0.0.0", "--run", "/nonexistent/run"]) == 2
    assert "run directory not found" in _one_line(capsys)
    assert any("0.0.0.0" in r.message for r in caplog.records)
