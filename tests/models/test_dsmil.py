"""DSMIL: the authors' released aggregators load strictly, the forward matches the authors'
formulation (sorted critical instance, scaled query similarity), combine modes, layout errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.checkpoints import load_mil_checkpoint
from models.dsmil import DSMIL, infer_dsmil_config
from models.mil import attention_for_class, create_mil_model, instance_scores_for, predict_bag
from wsi_core.errors import CheckpointError


def _bag(n: int = 37, d: int = 512, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _reference(sd: dict[str, torch.Tensor], h: torch.Tensor, *, nonlinear: bool) -> tuple:
    """The authors' forward written out from their description: (instance scores, bag logits,
    softmax attention (N, C)); the critical instance of class c is the first after a
    descending sort of column c."""
    c = h @ sd["i_classifier.fc.0.weight"].T + sd["i_classifier.fc.0.bias"]

    def q(x: torch.Tensor) -> torch.Tensor:
        if not nonlinear:
            return x @ sd["b_classifier.q.weight"].T + sd["b_classifier.q.bias"]
        x = torch.relu(x @ sd["b_classifier.q.0.weight"].T + sd["b_classifier.q.0.bias"])
        return torch.tanh(x @ sd["b_classifier.q.2.weight"].T + sd["b_classifier.q.2.bias"])

    Q = q(h)
    crit = torch.sort(c, dim=0, descending=True, stable=True)[1][0]  # (C,)
    A = F.softmax(Q @ q(h[crit]).T / Q.shape[1] ** 0.5, dim=0)       # (N, C)
    B = A.T @ h                                                       # v = identity
    bag = F.conv1d(B[None], sd["b_classifier.fcc.weight"], sd["b_classifier.fcc.bias"]).reshape(1, -1)
    return c, bag, A


@pytest.mark.shared
@pytest.mark.parametrize("fname,n_classes", [("c16_aggregator.pth", 1), ("tcga_aggregator.pth", 2)])
def test_released_aggregators_load_strictly(mil_dir: Path, fname: str, n_classes: int) -> None:
    path = mil_dir / "dsmil" / fname
    model = load_mil_checkpoint(path, model_type="dsmil", n_classes=n_classes, embed_dim=512)
    assert isinstance(model, DSMIL) and (model.n_classes, model.in_dim) == (n_classes, 512)
    assert not model.instance_independent and model.multi_label
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(sd)  # strict: every key used, none missing
    h = _bag()
    pred = predict_bag(model, h)
    assert pred.attention.shape == (n_classes, 37) and np.isfinite(pred.attention).all()
    assert np.isfinite(pred.logits).all() and ((pred.probs > 0) & (pred.probs < 1)).all()
    np.testing.assert_allclose(pred.probs, 1 / (1 + np.exp(-pred.logits)), rtol=1e-6)  # sigmoid
    scores = instance_scores_for(model, h)
    assert scores.shape == (37, n_classes) and np.isfinite(scores).all()
    c, bag, A = _reference(sd, h, nonlinear=True)
    np.testing.assert_allclose(scores, c.numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.logits, bag[0].numpy(), atol=1e-4)
    # raw attention is pre-softmax: its softmax over instances is the authors' A
    np.testing.assert_allclose(F.softmax(torch.from_numpy(pred.attention), dim=1).numpy(),
                               A.T.numpy(), atol=1e-6)
    for cls in range(n_classes):  # a heatmap of class c shows row c, computed on the whole bag
        np.testing.assert_allclose(attention_for_class(model, h, cls=cls, batch_size=5),
                                   pred.attention[cls], atol=1e-6)


@pytest.mark.shared
def test_init_file_is_reported_as_partial(mil_dir: Path) -> None:
    """init.pth holds only b_classifier.q / b_classifier.v (an initialisation the authors load
    with strict=False); it cannot be a model, and the error says what is missing."""
    path = mil_dir / "dsmil" / "init.pth"
    with pytest.raises(CheckpointError) as info:
        load_mil_checkpoint(path, model_type="dsmil")
    msg = str(info.value)
    assert msg.startswith(f"checkpoint {path} has an unknown layout for model_type dsmil and "
                          "matches no model_type; closest: dsmil (4 of 8 expected keys; missing "
                          "b_classifier.fcc.bias, b_classifier.fcc.weight, i_classifier.fc.0.bias, ...)")
    assert "keys found: b_classifier.q.weight, b_classifier.q.bias, b_classifier.v.1.weight" in msg


@pytest.mark.shared
def test_dsmil_file_as_clam_names_model_type(mil_dir: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_mil_checkpoint(mil_dir / "dsmil" / "tcga_aggregator.pth", model_type="clam_sb")
    assert str(info.value) == ("checkpoint tcga_aggregator.pth has a dsmil layout but "
                               "model_arguments.model_type is clam_sb; set model_type: dsmil")


@pytest.mark.parametrize("kw", [{"nonlinear": True, "passing_v": False},
                                {"nonlinear": False, "passing_v": True},
                                {"nonlinear": True, "passing_v": True, "q_dim": 64}])
def test_round_trip_and_layout_inference(tmp_path: Path, kw: dict) -> None:
    torch.manual_seed(0)
    ref = create_mil_model("dsmil", n_classes=3, in_dim=48, **kw)
    sd = ref.state_dict()
    inferred = infer_dsmil_config(sd)
    assert inferred == {"n_classes": 3, "in_dim": 48, "q_dim": kw.get("q_dim", 128),
                        "nonlinear": kw["nonlinear"], "passing_v": kw["passing_v"]}
    torch.save(sd, tmp_path / "agg.pth")
    loaded = load_mil_checkpoint(tmp_path / "agg.pth", model_type="dsmil", n_classes=3)
    h = _bag(40, 48, seed=1)
    a, b = predict_bag(ref, h), predict_bag(loaded, h)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.attention, b.attention)
    np.testing.assert_array_equal(instance_scores_for(ref, h), instance_scores_for(loaded, h))


def test_v_relu_follows_the_query_form() -> None:
    """A linear q with v.1 is the authors' early code (v without ReLU); a nonlinear q with v.1 is
    their later passing_v (with ReLU)."""
    early = create_mil_model("dsmil", n_classes=1, in_dim=8, nonlinear=False, passing_v=True)
    late = create_mil_model("dsmil", n_classes=1, in_dim=8, nonlinear=True, passing_v=True)
    assert len(early.b_classifier.v) == 2 and isinstance(late.b_classifier.v[2], torch.nn.ReLU)


def test_combine_mean_averages_probabilities(tmp_path: Path) -> None:
    torch.manual_seed(3)
    bag_model = create_mil_model("dsmil", n_classes=2, in_dim=16)
    torch.save(bag_model.state_dict(), tmp_path / "a.pth")
    mean_model = load_mil_checkpoint(tmp_path / "a.pth", model_type="dsmil",
                                     model_kwargs={"combine": "mean"})
    h = _bag(25, 16)
    with torch.inference_mode():
        scores, bag_logits, _ = bag_model.streams(h)
        want = 0.5 * (torch.sigmoid(bag_logits[0]) + torch.sigmoid(scores.max(dim=0)[0]))
    pred = predict_bag(mean_model, h)
    np.testing.assert_allclose(pred.probs, want.numpy(), atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-pred.logits)), pred.probs, atol=1e-5)
    with pytest.raises(CheckpointError) as info:
        load_mil_checkpoint(tmp_path / "a.pth", model_type="dsmil", model_kwargs={"combine": "max"})
    assert str(info.value) == ("cannot build dsmil for checkpoint a.pth with options "
                               "{'combine': 'max'}: dsmil combine must be one of ('bag', 'mean', "
                               "'logit_mean'), got 'max'")


def test_attention_depends_on_the_whole_bag() -> None:
    """The critical instance is chosen over the whole bag, so slices would be wrong: scoring in
    batches must still equal the whole-bag attention."""
    torch.manual_seed(4)
    model = create_mil_model("dsmil", n_classes=2, in_dim=16)
    h = _bag(50, 16)
    whole = predict_bag(model, h).attention
    with torch.inference_mode():
        sliced = torch.cat([model.attention_scores(h[i:i + 10]) for i in range(0, 50, 10)], dim=1)
    assert not np.allclose(sliced.numpy(), whole, atol=1e-3)
    np.testing.assert_allclose(attention_for_class(model, h, cls=1, batch_size=10), whole[1], atol=1e-6)


# --------------------------------------------------------------------------- MIL-Lab layout

def _mil_lab_state_dict(D: int, E: int, C: int, Q: int, n_fc: int, seed: int = 0) -> dict:
    """A state dict with MIL-Lab's DSMIL key names and shapes (``patch_embed`` Linear layers at
    0, 3, ...; ``fcc`` Conv1d(3, 3, E) which MIL-Lab builds but never calls), wrapped in its
    Hugging Face ``model.`` prefix."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.2

    sd = {}
    for i in range(n_fc):
        sd[f"patch_embed.{3 * i}.weight"], sd[f"patch_embed.{3 * i}.bias"] = r(E, D if i == 0 else E), r(E)
    sd |= {"i_classifier.inst_classifier.weight": r(C, E), "i_classifier.inst_classifier.bias": r(C),
           "b_classifier.q.weight": r(Q, E), "b_classifier.q.bias": r(Q),
           "b_classifier.v.1.weight": r(E, E), "b_classifier.v.1.bias": r(E),
           "b_classifier.norm.weight": 1 + r(E), "b_classifier.norm.bias": r(E),
           "b_classifier.fcc.weight": r(3, 3, E), "b_classifier.fcc.bias": r(3),
           "classifier.weight": r(C, C, E), "classifier.bias": r(C)}
    return {f"model.{k}": v for k, v in sd.items()}


def _mil_lab_reference(sd: dict, h: torch.Tensor, n_fc: int) -> tuple:
    """MIL-Lab's DSMIL forward written out from its description: (instance scores (N, C), bag
    logits (C,), logits = their mean with the max instance score (C,), softmax attention (N, C))."""
    sd = {k.removeprefix("model."): v for k, v in sd.items()}
    for i in range(n_fc):
        h = torch.relu(F.linear(h, sd[f"patch_embed.{3 * i}.weight"], sd[f"patch_embed.{3 * i}.bias"]))
    c = F.linear(h, sd["i_classifier.inst_classifier.weight"], sd["i_classifier.inst_classifier.bias"])
    Q = F.linear(h, sd["b_classifier.q.weight"], sd["b_classifier.q.bias"])
    V = F.linear(h, sd["b_classifier.v.1.weight"], sd["b_classifier.v.1.bias"])
    crit = torch.sort(c, dim=0, descending=True, stable=True)[1][0]
    A = F.softmax(Q @ Q[crit].T / Q.shape[1] ** 0.5, dim=0)                      # (N, C)
    B = F.layer_norm(A.T @ V, (h.shape[1],), sd["b_classifier.norm.weight"], sd["b_classifier.norm.bias"])
    bag = F.conv1d(B[None], sd["classifier.weight"], sd["classifier.bias"]).reshape(-1)
    return c, bag, 0.5 * (bag + c.max(dim=0)[0]), A


@pytest.mark.parametrize("n_fc", [1, 2])
def test_mil_lab_layout_loads_and_matches_its_forward(tmp_path: Path, n_fc: int) -> None:
    D, E, C, Q = 40, 24, 3, 16
    sd = _mil_lab_state_dict(D, E, C, Q, n_fc)
    torch.save(sd, tmp_path / "dsmil_mil_lab.pt")
    model = load_mil_checkpoint(tmp_path / "dsmil_mil_lab.pt", model_type="dsmil", n_classes=C,
                                embed_dim=D)
    assert (model.layout, model.combine, model.multi_label) == ("mil_lab", "logit_mean", False)
    assert {f"model.{k}" for k in model.state_dict()} == set(sd)  # strict: every key used
    h = _bag(33, D, seed=5)
    c, bag, logits, A = _mil_lab_reference(sd, h, n_fc)
    pred = predict_bag(model, h)
    np.testing.assert_allclose(pred.logits.reshape(-1), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.probs.reshape(-1), F.softmax(logits, dim=0).numpy(), atol=1e-6)
    np.testing.assert_allclose(instance_scores_for(model, h), c.numpy(), atol=1e-5)
    assert pred.attention.shape == (C, 33)
    np.testing.assert_allclose(F.softmax(torch.from_numpy(pred.attention), dim=1).numpy(), A.T.numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(attention_for_class(model, h, cls=2), pred.attention[2], atol=1e-6)
    # combine 'bag' keeps MIL-Lab's bag stream alone; 'mean' (sigmoid averaging) is refused
    bag_only = load_mil_checkpoint(tmp_path / "dsmil_mil_lab.pt", model_type="dsmil",
                                   model_kwargs={"combine": "bag"})
    np.testing.assert_allclose(predict_bag(bag_only, h).logits.reshape(-1), bag.numpy(), atol=1e-5)
    with pytest.raises(CheckpointError, match="a MIL-Lab model is softmax-trained: use 'logit_mean'"):
        load_mil_checkpoint(tmp_path / "dsmil_mil_lab.pt", model_type="dsmil", model_kwargs={"combine": "mean"})


def test_mil_lab_layout_inference_and_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(2)
    ref = create_mil_model("dsmil", n_classes=4, in_dim=20, layout="mil_lab", embed_dim=12, q_dim=8,
                           num_fc_layers=2)
    assert infer_dsmil_config(ref.state_dict()) == {"n_classes": 4, "in_dim": 20, "embed_dim": 12,
                                                    "q_dim": 8, "num_fc_layers": 2, "layout": "mil_lab"}
    torch.save(ref.state_dict(), tmp_path / "m.pt")
    loaded = load_mil_checkpoint(tmp_path / "m.pt", model_type="dsmil")
    h = _bag(21, 20, seed=3)
    np.testing.assert_array_equal(predict_bag(ref.eval(), h).logits, predict_bag(loaded, h).logits)
    with pytest.raises(CheckpointError, match="has a dsmil layout but model_arguments.model_type is abmil"):
        load_mil_checkpoint(tmp_path / "m.pt", model_type="abmil")
