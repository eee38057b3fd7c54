"""The MIL interface: registry, shapes, batching, predict_bag / attention_for_class."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from models.mil import (MIL_MODELS, attention_for_class, create_mil_model, instance_scores_for, predict_bag,
                        list_mil_models)
from wsi_core.errors import CheckpointError, FeatureFileError

ARCHS = [
    ("clam_sb", {"model_size": "small", "gate": True}),
    ("clam_sb", {"model_size": "big", "gate": False}),
    ("clam_mb", {"model_size": "small", "gate": True}),
    ("clam_mb", {"model_size": "big", "gate": False, "dropout": 0.25}),
    ("abmil", {"gate": True}),
    ("abmil", {"gate": False, "num_heads": 2, "num_fc_layers": 2}),
]


def _bag(n: int, d: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_registry_has_builtins() -> None:
    assert {"clam_sb", "clam_mb", "abmil"} <= set(MIL_MODELS)
    assert models.MIL_MODELS is MIL_MODELS
    # the bag-level architectures register on first registry use, whatever models/ imports
    assert list_mil_models() == ["abmil", "clam_mb", "clam_sb", "dsmil", "transmil"]
    assert set(MIL_MODELS) == set(list_mil_models())


@pytest.mark.parametrize("name,kw", ARCHS)
def test_forward_shapes_and_batched_attention(name: str, kw: dict) -> None:
    torch.manual_seed(0)
    model = create_mil_model(name, n_classes=3, in_dim=64, **kw)
    h = _bag(101)
    with torch.inference_mode():
        logits, probs, A = model(h)
        K = 3 if name == "clam_mb" else kw.get("num_heads", 1)
        assert logits.shape == (1, 3) and probs.shape == (1, 3) and A.shape == (K, 101)
        torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
        torch.testing.assert_close(model.attention_scores(h), A)
        # instances are scored independently: slices of the bag give the same attention
        sliced = torch.cat([model.attention_scores(h[i:i + 17]) for i in range(0, 101, 17)], dim=1)
    torch.testing.assert_close(sliced, A, rtol=0, atol=1e-5)
    assert not model.training


def test_predict_bag_and_attention_for_class_clam_mb() -> None:
    torch.manual_seed(1)
    model = create_mil_model("clam_mb", n_classes=3, in_dim=64)
    h = _bag(50).numpy()
    pred = predict_bag(model, h)
    assert pred.logits.dtype == np.float32 and pred.probs.shape == (3,)
    assert pred.attention.shape == (3, 50) and pred.attention.dtype == np.float32
    assert pred.pred == int(np.argmax(pred.probs))
    for cls in range(3):  # CLAM-MB heatmaps show the branch of the class asked for
        a = attention_for_class(model, h, cls=cls, batch_size=16)
        assert a.shape == (50,) and a.dtype == np.float32
        np.testing.assert_allclose(a, pred.attention[cls], atol=1e-5)


def test_attention_for_class_single_branch_ignores_cls() -> None:
    torch.manual_seed(2)
    model = create_mil_model("clam_sb", n_classes=2, in_dim=64)
    h = _bag(30)
    a0 = attention_for_class(model, h, cls=0)
    a1 = attention_for_class(model, h, cls=1, batch_size=7)
    np.testing.assert_allclose(a0, predict_bag(model, h).attention[0], atol=1e-5)
    np.testing.assert_allclose(a0, a1, atol=1e-5)
    with pytest.raises(ValueError, match="cls must be in 0..1"):
        attention_for_class(model, h, cls=2)


def test_predict_bag_rejects_bad_features() -> None:
    model = create_mil_model("clam_sb", n_classes=2, in_dim=64)
    with pytest.raises(FeatureFileError, match="features are 32-d but the model expects 64-d"):
        predict_bag(model, np.zeros((5, 32), np.float32))
    with pytest.raises(FeatureFileError, match=r"non-empty \(N, D\) array, got shape \(0, 64\)"):
        predict_bag(model, np.zeros((0, 64), np.float32))


def test_create_unknown_model_suggests_closest() -> None:
    with pytest.raises(CheckpointError) as info:
        create_mil_model("clam_bs", n_classes=2, in_dim=8)
    msg = str(info.value)
    assert "unknown model_arguments.model_type 'clam_bs'" in msg
    assert "abmil, clam_mb, clam_sb" in msg and "did you mean 'clam_sb'?" in msg


# --------------------------------------------------------------------------- MIL-Lab's CLAM-SB

def test_mil_lab_clam_sb_loads_as_clam_sb_with_abmil_maps(tmp_path):
    """MIL-Lab's CLAM-SB = its one-head ABMIL + instance_classifiers (training only): it loads as
    clam_sb (strictly, through the Hugging Face ``model.`` prefix) and scores like that ABMIL."""
    from models.abmil import ABMIL
    from models.checkpoints import load_mil_checkpoint
    from models.clam import ClamSBMilLab

    torch.manual_seed(0)
    abmil = create_mil_model("abmil", n_classes=3, in_dim=20, embed_dim=16, attn_dim=8, gate=False,
                             num_fc_layers=2).eval()
    sd = dict(abmil.state_dict())
    for c in range(3):
        sd[f"instance_classifiers.{c}.weight"], sd[f"instance_classifiers.{c}.bias"] = torch.randn(2, 16), torch.randn(2)
    torch.save({f"model.{k}": v for k, v in sd.items()}, tmp_path / "clam_mil_lab.pt")
    model = load_mil_checkpoint(tmp_path / "clam_mil_lab.pt", model_type="clam_sb", n_classes=3, embed_dim=20)
    assert type(model) is ClamSBMilLab and isinstance(model, ABMIL) and set(model.state_dict()) == set(sd)
    h = torch.randn(31, 20)
    a, b = predict_bag(abmil, h), predict_bag(model, h)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.attention, b.attention)
    np.testing.assert_array_equal(instance_scores_for(abmil, h), instance_scores_for(model, h))
    with pytest.raises(CheckpointError, match="has a clam_sb layout but model_arguments.model_type is abmil; "
                                              "set model_type: clam_sb"):
        load_mil_checkpoint(tmp_path / "clam_mil_lab.pt", model_type="abmil")
