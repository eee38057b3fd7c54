"""patching_arguments.custom_downsample > 1 (CLAM's Wsi_Region): patches are read patch_size * c px
wide and shrunk to patch_size before the encoder."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from heatmaps.config import parse_config
from heatmaps.run import run_config
from models import create_encoder
from models.extract import extract_features
from wsi_core.errors import ConfigError

ONE = [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}]


@pytest.mark.shared
def test_patches_are_read_larger_and_shrunk(make_fast_config, shared_dir, tmp_path):
    cfg = make_fast_config(tmp_path, ONE, patching_arguments={"custom_downsample": 2})
    summary = run_config(cfg, progress=False)
    assert not summary.failed, summary.failed
    with h5py.File(tmp_path / "raw/FAST/class_a/CMU-1-Small-Region/CMU-1-Small-Region.h5") as f:
        feats, coords = f["features"][:], f["coords"][:]
        assert f["features"].attrs["custom_downsample"] == 2                    # what made them
    assert len(coords) > 3 and set(np.diff(np.unique(coords[:, 0]))) == {512}   # CLAM's grid: step 256 * 2
    enc = create_encoder("resnet50_trunc", target_img_size=32,
                         weights_path=shared_dir / "clam_reference/checkpoints/resnet50_trunc_seed0.safetensors")
    slide = shared_dir / "slides/CMU-1-Small-Region.svs"
    kw = {"patch_level": 0, "encoder": enc, "num_workers": 0, "progress": False}
    want = extract_features(slide, coords[:4], patch_size=512, target_patch_size=256, **kw)
    np.testing.assert_allclose(feats[:4], want, atol=1e-5)
    plain = extract_features(slide, coords[:4], patch_size=256, **kw)     # the old, too-small read
    assert np.abs(feats[:4] - plain).max() > 1e-2


def test_fully_convolutional_refuses_custom_downsample():
    data = {"model_arguments": {"ckpt_path": "m.pt"}, "patching_arguments": {"custom_downsample": 2},
            "encoder_arguments": {"fully_convolutional": True}}
    with pytest.raises(ConfigError, match="run.yaml: encoder_arguments.fully_convolutional pools .* set "
                                          "patching_arguments.custom_downsample to 1"):
        parse_config(data, source="run.yaml")
