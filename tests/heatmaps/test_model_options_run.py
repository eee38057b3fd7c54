"""model_arguments options the weights cannot tell (DSMIL's combine, TransMIL's num_landmarks) reach
the model of a YAML run, and are refused for other model types."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from heatmaps.config import parse_config
from heatmaps.run import run_config
from models.mil import create_mil_model, predict_bag
from wsi_core.errors import ConfigError

ONE = [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}]
RAW = "raw/FAST/class_a/CMU-1-Small-Region"


def _save(model: torch.nn.Module, path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.shared
def test_dsmil_combine_reaches_the_results_csv(make_fast_config, tmp_path):
    torch.manual_seed(0)
    ref = create_mil_model("dsmil", n_classes=2, in_dim=1024).eval()
    ckpt = _save(ref, tmp_path / "dsmil.pth")
    cfg = make_fast_config(tmp_path, ONE, model_arguments={"ckpt_path": ckpt, "model_type": "dsmil",
                                                           "combine": "mean"})
    summary = run_config(cfg, progress=False)
    assert not summary.failed, summary.failed
    with h5py.File(tmp_path / RAW / "CMU-1-Small-Region.h5") as f:
        feats = torch.from_numpy(f["features"][:])
    got = pd.read_csv(summary.results_csv)[["p_0", "p_1"]].to_numpy()[0]  # CLAM: top-k, descending

    def probs(combine: str) -> np.ndarray:
        ref.combine = combine
        return np.sort(predict_bag(ref, feats).probs.reshape(-1))[::-1]

    np.testing.assert_allclose(got, probs("mean"), atol=1e-5)
    assert np.abs(got - probs("bag")).max() > 1e-3  # the option mattered


@pytest.mark.shared
def test_transmil_num_landmarks_reaches_the_blockmap(make_fast_config, tmp_path):
    torch.manual_seed(0)
    kw = {"n_classes": 2, "in_dim": 1024, "embed_dim": 64, "num_heads": 4}
    ckpt = _save(create_mil_model("transmil", **kw), tmp_path / "transmil.pt")
    cfg = make_fast_config(tmp_path, ONE, model_arguments={"ckpt_path": ckpt, "model_type": "transmil",
                                                           "embed_dim": 1024, "num_landmarks": 8})
    summary = run_config(cfg, progress=False)
    assert not summary.failed, summary.failed
    with h5py.File(tmp_path / RAW / "CMU-1-Small-Region.h5") as f:
        feats = torch.from_numpy(f["features"][:])
    with h5py.File(tmp_path / RAW / "CMU-1-Small-Region_blockmap.h5") as f:
        got = f["attention_scores"][:].reshape(-1)
    for landmarks, same in ((8, True), (32, False)):  # 32 = embed_dim // 2, the default
        model = create_mil_model("transmil", num_landmarks=landmarks, **kw).eval()
        model.load_state_dict(torch.load(ckpt, weights_only=True))
        want = predict_bag(model, feats).attention.reshape(-1)
        assert np.allclose(got, want, atol=1e-6) == same, landmarks


@pytest.mark.parametrize("key,value,owner", [("combine", "mean", "dsmil"), ("num_landmarks", 64, "transmil")])
def test_model_option_of_another_model_type_is_refused(key, value, owner):
    data = {"model_arguments": {"ckpt_path": "m.pt", "model_type": "clam_sb", key: value}}
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="run.yaml")
    assert str(err.value) == (f"run.yaml: model_arguments.{key} applies to model_type {owner} only, but "
                              f"model_type is clam_sb; remove {key} or set it to null")
    data["model_arguments"]["model_type"] = owner
    assert parse_config(data).model_arguments.model_kwargs() == {key: value}
