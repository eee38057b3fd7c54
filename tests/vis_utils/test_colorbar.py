"""Colour bar PNGs and scale records (JSON, HDF5 attributes)."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from vis_utils.colorbar import (
    COLORBAR_SIZE_PX, save_colorbar, save_scale_json, scale_attrs, scale_from_attrs,
)
from vis_utils.normalize import fit_scale, fit_score_scale, percentile_scale
from wsi_core.errors import ConfigError
from wsi_core.io import write_h5


@pytest.fixture
def run_scale3():
    rng = np.random.default_rng(0)
    return fit_scale([rng.normal(size=n) for n in (50, 60, 70)], lower=0.01, upper=0.99)


def test_colorbar_png_size_and_colours(tmp_path, run_scale3):
    out = save_colorbar(tmp_path / "a" / "s1_attention_colorbar.png", cmap="magma", scale=run_scale3,
                        label="attention", units="raw logit")
    assert out.is_file() and not list(out.parent.glob("*.tmp-*"))
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[:2] == (COLORBAR_SIZE_PX[1], COLORBAR_SIZE_PX[0])
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 100   # a gradient was drawn, not a blank
    small = save_colorbar(tmp_path / "b.png", cmap="coolwarm", scale=percentile_scale(), label="attention",
                          units="percentile (0-100)", size_px=(300, 120))
    assert Image.open(small).size == (300, 120)


def test_colorbar_title_and_degenerate_scale(tmp_path):
    s = fit_scale([np.full(4, 1.5)])
    assert "this slide" in s.describe()
    out = save_colorbar(tmp_path / "flat.png", cmap="jet", scale=s, label="attention", units="raw logit")
    assert out.is_file()
    score = fit_score_scale([np.array([0.2, 0.5, 0.9])], score_threshold=0.95, center=0.5)
    assert save_colorbar(tmp_path / "score.png", cmap="coolwarm", scale=score, label="P(tumour)",
                         units="probability").is_file()


def test_unknown_cmap_names_the_key(tmp_path, run_scale3):
    with pytest.raises(ConfigError, match=r"unknown colormap 'nope' in heatmap_arguments"):
        save_colorbar(tmp_path / "x.png", cmap="nope", scale=run_scale3, label="a", units="b")
    assert not (tmp_path / "x.png").exists()


def test_scale_json_states_the_numbers(tmp_path, run_scale3):
    path = save_scale_json(tmp_path / "s1_attention_scale.json", run_scale3, cmap="magma",
                           slide_ids=np.array(["s1", "s2", "s3"]), label="attention")
    data = json.loads(path.read_text())
    assert data["lo"] == run_scale3.lo and data["hi"] == run_scale3.hi
    assert (data["att_lower_threshold"], data["att_upper_threshold"]) == (0.01, 0.99)
    assert (data["source"], data["n_slides"], data["n_scores"]) == ("run", 3, 180)
    assert data["kind"] == "quantile" and data["cmap"] == "magma" and data["slide_ids"] == ["s1", "s2", "s3"]
    with pytest.raises(ValueError, match="collide"):
        save_scale_json(tmp_path / "y.json", run_scale3, lo=1)


def test_scale_attrs_round_trip_through_h5(tmp_path, run_scale3):
    attrs = scale_attrs(run_scale3)
    assert attrs["scale_source"] == "run" and "scale_center" not in attrs    # None left out
    path = write_h5(tmp_path / "blockmap.h5", {"coords": np.zeros((2, 2), np.int64)}, attrs={"/": attrs})
    with h5py.File(path, "r") as f:
        back = scale_from_attrs(dict(f.attrs))
    assert back == run_scale3
    assert scale_from_attrs({"probs": 1}) is None
