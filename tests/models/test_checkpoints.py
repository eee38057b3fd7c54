"""Checkpoint loading: round trips for every layout, legacy prefixes, and every error message."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import check_feature_dim, create_mil_model, load_mil_checkpoint, predict_bag
from models.checkpoints import normalise_state_dict
from wsi_core.errors import CheckpointError

D = 48  # small feature width keeps these fast

CASES = [
    ("clam_sb", {"model_size": "small", "gate": True}, "small"),
    ("clam_sb", {"model_size": "small", "gate": False}, "small"),
    ("clam_sb", {"model_size": "big", "gate": True}, "big"),
    ("clam_sb", {"model_size": "big", "gate": False, "dropout": 0.25}, "big"),
    ("clam_mb", {"model_size": "small", "gate": True}, "small"),
    ("clam_mb", {"model_size": "small", "gate": False, "dropout": 0.25}, "small"),
    ("clam_mb", {"model_size": "big", "gate": True}, "big"),
    ("clam_mb", {"model_size": "big", "gate": False}, "big"),
    ("abmil", {"gate": True}, None),
    ("abmil", {"gate": False}, None),
    ("abmil", {"gate": True, "num_heads": 2, "num_fc_layers": 2, "embed_dim": 64, "attn_dim": 32}, None),
    ("abmil", {"gate": False, "head_dim": 32}, None),
]


def _model(name: str, kw: dict, n_classes: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    return create_mil_model(name, n_classes=n_classes, in_dim=D, **kw)


def _bag(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, D)).astype(np.float32)


def _same_outputs(a, b) -> None:
    pa, pb = predict_bag(a, _bag()), predict_bag(b, _bag())
    np.testing.assert_array_equal(pa.logits, pb.logits)
    np.testing.assert_array_equal(pa.attention, pb.attention)


@pytest.mark.parametrize("name,kw,size", CASES)
def test_round_trip(tmp_path: Path, name: str, kw: dict, size: str | None) -> None:
    ref = _model(name, kw)
    path = tmp_path / "ckpt.pt"
    torch.save(ref.state_dict(), path)
    loaded = load_mil_checkpoint(path, model_type=name, n_classes=3, model_size=size, embed_dim=D)
    assert type(loaded) is type(ref) and loaded.in_dim == D and loaded.n_classes == 3
    assert not loaded.training
    _same_outputs(ref, loaded)


def test_ungated_dropout_layer_index_from_keys(tmp_path: Path) -> None:
    """CLAM's ungated net ends in module.3 when trained with dropout, module.2 without."""
    for dropout, last in ((0.25, "3"), (0.0, "2")):
        ref = _model("clam_sb", {"gate": False, "dropout": dropout})
        assert f"attention_net.3.module.{last}.weight" in ref.state_dict()
        torch.save(ref.state_dict(), tmp_path / "u.pt")
        # the config's drop_out does not have to agree: the keys decide
        _same_outputs(ref, load_mil_checkpoint(tmp_path / "u.pt", model_type="clam_sb",
                                               drop_out=0.25 - dropout))


@pytest.mark.parametrize("wrap", ["bare", "model", "state_dict", "model_state_dict"])
def test_legacy_prefixes_and_wrappers(tmp_path: Path, wrap: str) -> None:
    ref = _model("clam_sb", {"gate": False, "dropout": 0.25})
    sd = {k.replace("attention_net.", "attention_net.module.", 1): v for k, v in ref.state_dict().items()}
    assert "attention_net.module.3.module.0.weight" in sd  # legacy prefix + a real 'module'
    sd["instance_loss_fn.labels"] = torch.tensor([0, 1])
    sd = {f"module.{k}": v for k, v in sd.items()}  # whole model wrapped in DataParallel too
    torch.save(sd if wrap == "bare" else {wrap: sd, "epoch": 3}, tmp_path / "legacy.pt")
    _same_outputs(ref, load_mil_checkpoint(tmp_path / "legacy.pt", model_type="clam_sb"))


def test_normalise_keeps_inner_module_names() -> None:
    t = torch.zeros(1)
    sd = normalise_state_dict({"attention_net.3.module.0.weight": t,
                               "global_attn.module.3.weight": t,
                               "instance_loss_fn.weight": t})
    assert sorted(sd) == ["attention_net.3.module.0.weight", "global_attn.module.3.weight"]


def test_mil_lab_hf_wrapper_prefix(tmp_path: Path) -> None:
    ref = _model("abmil", {"gate": True})
    torch.save({f"model.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "hf.pt")
    _same_outputs(ref, load_mil_checkpoint(tmp_path / "hf.pt", model_type="abmil"))


@pytest.mark.shared
def test_official_demo_checkpoint_loads(demo_ckpt: Path) -> None:
    model = load_mil_checkpoint(demo_ckpt, model_type="clam_sb")
    assert (model.in_dim, model.n_classes, model.model_size, model.gate) == (1024, 2, "small", True)


@pytest.mark.parametrize("field,value,text", [
    ("n_classes", 4, "has n_classes=3 but the config sets exp_arguments.n_classes=4"),
    ("model_size", "big", "has model_size=small but the config sets model_arguments.model_size=big"),
    ("embed_dim", 1024, "has embed_dim=48 but the config sets model_arguments.embed_dim=1024"),
])
def test_config_disagreement(tmp_path: Path, field: str, value, text: str) -> None:
    torch.save(_model("clam_sb", {}).state_dict(), tmp_path / "s_1_checkpoint.pt")
    with pytest.raises(CheckpointError) as info:
        load_mil_checkpoint(tmp_path / "s_1_checkpoint.pt", model_type="clam_sb", **{field: value})
    assert str(info.value).startswith(f"checkpoint s_1_checkpoint.pt {text}")


def test_feature_dim_mismatch_message() -> None:
    model = create_mil_model("clam_sb", n_classes=2, in_dim=1536)
    check_feature_dim(model, 1536, encoder_name="uni_v2", ckpt_path="/x/uni.pt")  # fits: no error
    with pytest.raises(CheckpointError) as info:
        check_feature_dim(model, 1024, encoder_name="resnet50_trunc", ckpt_path="/x/s_0_checkpoint.pt")
    assert str(info.value) == (
        "checkpoint s_0_checkpoint.pt expects 1536-d features (UNI2-h); encoder resnet50_trunc "
        "gives 1024-d features; set encoder_arguments.model_name to a matching encoder")


def test_unknown_layout_names_file_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"encoder.fc1.weight": torch.zeros(2, 2), "encoder.fc1.bias": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as info:
        load_mil_checkpoint(path, model_type="clam_sb")
    msg = str(info.value)
    assert f"checkpoint {path} has an unknown layout for model_type clam_sb" in msg
    assert "keys found: encoder.fc1.weight, encoder.fc1.bias" in msg
    assert "expected keys like attention_net.0.weight" in msg
    assert "matches no model_type; closest: none (no key name of any model_type)" in msg


def test_unknown_layout_names_closest_model_type(tmp_path: Path) -> None:
    """A CLAM file missing its classifier fits no layout; the closest one is named with counts."""
    sd = _model("clam_sb", {"gate": True}, n_classes=2).state_dict()
    del sd["classifiers.weight"], sd["classifiers.bias"]
    torch.save(sd, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError) as info:
        load_mil_checkpoint(tmp_path / "cut.pt", model_type="clam_sb")
    assert ("matches no model_type; closest: clam_sb (12 of 14 expected keys; missing "
            "classifiers.bias, classifiers.weight); keys found: attention_net.0.weight") in str(info.value)


def test_layout_of_another_model_type(tmp_path: Path) -> None:
    torch.save(_model("clam_mb", {}).state_dict(), tmp_path / "mb.pt")
    with pytest.raises(CheckpointError, match="has a clam_mb layout but model_arguments.model_type "
                                              "is clam_sb; set model_type: clam_mb"):
        load_mil_checkpoint(tmp_path / "mb.pt", model_type="clam_sb")


def test_unknown_model_type_suggests(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_mil_checkpoint(tmp_path / "any.pt", model_type="abmill")
    assert str(info.value) == ("unknown model_arguments.model_type 'abmill'; valid names: "
                               "abmil, clam_mb, clam_sb, dsmil, transmil; did you mean 'abmil'?")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "s_0_checkpoint.pt"
    with pytest.raises(CheckpointError) as info:
        load_mil_checkpoint(path, model_type="clam_sb")
    assert str(info.value) == (f"checkpoint not found: {path}; set model_arguments.ckpt_path to an "
                               "existing file")


def test_unreadable_and_non_state_dict_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {junk}: .*torch state dict"):
        load_mil_checkpoint(junk, model_type="clam_sb")
    lst = tmp_path / "list.pt"
    torch.save([1, 2, 3], lst)
    with pytest.raises(CheckpointError, match=f"checkpoint {lst} holds no state dict of tensors"):
        load_mil_checkpoint(lst, model_type="clam_sb")


def test_strict_load_reports_extra_keys(tmp_path: Path) -> None:
    sd = _model("clam_sb", {}).state_dict()
    sd["attention_net.9.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="does not load into clam_sb: .*attention_net.9.weight"):
        load_mil_checkpoint(tmp_path / "extra.pt", model_type="clam_sb")
