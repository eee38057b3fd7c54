"""wsi_core.formats: the feature and score H5 layouts (CLAM, TRIDENT, ours), written and read back."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from wsi_core.errors import FeatureFileError
from wsi_core.formats import (
    ATTENTION_RAW, ATTENTION_SCORES, CLASS_SCORES, COORDS, FEATURES, TRIDENT_ATTRS, has_raw_scores, read_coords_h5,
    read_features_h5, read_raw_scores, read_scores, record_scale_attrs, scores_are_percentiles, validate_bag,
    write_coords_h5, write_features_h5, write_scores, write_trident_features_h5,
)


def _bag(n=5, d=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)).astype(np.float32), np.arange(2 * n, dtype=np.int64).reshape(n, 2) * 256


def test_clam_features_roundtrip_with_attrs(tmp_path):
    feats, coords = _bag()
    path = write_features_h5(tmp_path / "s.h5", feats, coords, attrs={"encoder": "resnet50_trunc", "patch_size": 256})
    with h5py.File(path) as f:
        assert set(f) == {FEATURES, COORDS}
        assert f[FEATURES].dtype == np.float32 and f[COORDS].dtype == np.int64
        assert f[FEATURES].attrs["encoder"] == "resnet50_trunc"
    got, c, attrs = read_features_h5(path)
    assert np.array_equal(got, feats) and np.array_equal(c, coords) and attrs["patch_size"] == 256
    c2, _ = read_coords_h5(path)
    assert np.array_equal(c2, coords)


def test_trident_features_carry_their_patching_attributes(tmp_path):
    feats, coords = _bag()
    path = write_trident_features_h5(tmp_path / "features_uni_v1" / "s.h5", feats, coords, patch_size=256,
                                     patch_size_level0=512, level0_magnification=40, target_magnification=20)
    with h5py.File(path) as f:
        assert {k: f[COORDS].attrs[k] for k in TRIDENT_ATTRS} == {
            "patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40.0, "target_magnification": 20.0}
    _, _, attrs = read_features_h5(path)
    assert attrs["patch_size_level0"] == 512


def test_feature_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(FeatureFileError, match="bad.h5: not a readable HDF5 file"):
        read_features_h5(bad)
    with h5py.File(tmp_path / "nofeat.h5", "w") as f:
        f["coords"] = np.zeros((2, 2), np.int64)
    with pytest.raises(FeatureFileError, match="nofeat.h5: no 'features' dataset"):
        read_features_h5(tmp_path / "nofeat.h5")
    with pytest.raises(FeatureFileError, match="3 feature rows but 2 coords"):
        validate_bag(np.zeros((3, 4)), np.zeros((2, 2)), source="x")
    with pytest.raises(FeatureFileError, match="hold NaN or Inf"):
        validate_bag(np.full((2, 4), np.nan), np.zeros((2, 2)), source="x")


def test_score_file_roundtrip_raw_scores_and_scales(tmp_path):
    coords = np.array([[0, 0], [128, 0]], np.int64)
    path = write_scores(tmp_path / "s_0.5_roi_False.h5", [10.0, 90.0], coords, attrs={"score_kind": "percentile"},
                        attention_raw=[-1.0, 2.0], class_scores=np.array([[0.1, 0.2], [0.3, 0.4]]))
    with h5py.File(path) as f:
        assert f[ATTENTION_SCORES].shape == (2, 1) and f[ATTENTION_RAW].shape == (2, 1)
        assert f[CLASS_SCORES].shape == (2, 2)
    sf = read_scores(path)
    assert sf.scores.tolist() == [10.0, 90.0] and sf.attrs["score_kind"] == "percentile"
    assert has_raw_scores(path)
    raw = read_raw_scores(path)
    assert raw.attention.tolist() == [-1.0, 2.0] and raw.class_logits.shape == (2, 2)
    record_scale_attrs(path, {"attention": {"lo": 0.5}, "score_LUAD": {"hi": 0.9}})
    assert read_scores(path).attrs["attention_lo"] == 0.5 and read_scores(path).attrs["score_LUAD_hi"] == 0.9
    assert np.array_equal(read_raw_scores(path).coords, coords)     # datasets kept by the rewrite


def test_clam_score_file_without_raw_scores(tmp_path):
    path = write_scores(tmp_path / "s_blockmap.h5", [0.3, -2.0], np.zeros((2, 2), np.int64))
    assert not has_raw_scores(path)
    with pytest.raises(FeatureFileError, match="no 'attention_raw'/'class_scores'"):
        read_raw_scores(path)
    with pytest.raises(FeatureFileError, match="not a score file"):
        read_scores(tmp_path / "missing.h5")


def test_percentile_detection():
    from wsi_core.formats import ScoreFile

    pct = ScoreFile(np.array([0.0, 50.0, 100.0]), np.zeros((3, 2), np.int64), {})
    raw = ScoreFile(np.array([-3.0, 5.0]), np.zeros((2, 2), np.int64), {})
    assert scores_are_percentiles(pct, file_kind="fine_pass")
    assert not scores_are_percentiles(pct, file_kind="blockmap")
    assert not scores_are_percentiles(raw, file_kind="fine_pass")
    tagged = ScoreFile(raw.scores, raw.coords, {"score_kind": "percentile"})
    assert scores_are_percentiles(tagged, file_kind=None)


def test_formats_import_no_torch():
    code = "import sys, wsi_core.formats, wsi_core.levels; sys.exit(10 * ('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_write_coords_h5(tmp_path):
    coords = np.array([[0, 0], [128, 0], [0, 128]], dtype=np.int32)
    path = tmp_path / "slide_heatmap_coords.h5"
    write_coords_h5(path, coords, np.array([0.1, 0.5, 0.9]), patch_size=256, step=128,
                    patch_level=0, encoder="uni_v2", slide_id="slide")
    with h5py.File(path, "r") as f:
        assert f["coords"].dtype == np.int64 and f["coords"].shape == (3, 2)
        assert f["attention_scores"].dtype == np.float32 and f["attention_scores"].shape == (3, 1)
        assert dict(f.attrs) == {"patch_size": 256, "step_size": 128, "patch_level": 0,
                                 "encoder": "uni_v2", "slide_id": "slide"}
        assert f["coords"].attrs["patch_size"] == 256
    with pytest.raises(FeatureFileError, match=r"coords \(3, 2\) and scores \(2,\) do not match"):
        write_coords_h5(path, coords, np.array([0.1, 0.5]), patch_size=256, step=128,
                        patch_level=0, encoder="uni_v2")
