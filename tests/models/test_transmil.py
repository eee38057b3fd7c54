"""TransMIL: Nystrom attention against its formulation, the authors' and MIL-Lab's key layouts,
class-token attention maps, round trips and layout errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.checkpoints import load_mil_checkpoint
from models.mil import attention_for_class, create_mil_model, instance_scores_for, predict_bag
from models.transmil import NystromAttention, TransMIL, infer_transmil_config, moore_penrose_pinv
from wsi_core.errors import CheckpointError

SMALL = {"embed_dim": 32, "num_heads": 4, "num_landmarks": 8}  # fast variant for most tests


def _bag(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _reference_nystrom(att: NystromAttention, x: torch.Tensor, cls_index: int):
    """nystrom_attention's formulation, all heads at once and in its association order:
    (attn1 @ pinv(attn2)) @ (attn3 @ v); returns (out, head-mean row of token cls_index)."""
    B, n, _ = x.shape
    h, m, d = att.heads, att.num_landmarks, att.dim_head
    pad = (m - n % m) % m
    x = F.pad(x, (0, 0, pad, 0))
    q, k, v = (t.reshape(B, n + pad, h, d).permute(0, 2, 1, 3) for t in att.to_qkv(x).chunk(3, -1))
    q = q * d ** -0.5
    g = (n + pad) // m
    ql, kl = q.reshape(B, h, m, g, d).mean(3), k.reshape(B, h, m, g, d).mean(3)
    a1, a2, a3 = (F.softmax(s, -1) for s in (q @ kl.mT, ql @ kl.mT, ql @ k.mT))
    inv = moore_penrose_pinv(a2, 6)
    out = (a1 @ inv) @ (a3 @ v) + att.res_conv(v)
    out = att.to_out(out.permute(0, 2, 1, 3).reshape(B, n + pad, h * d))[:, -n:]
    return out, (a1 @ inv @ a3).mean(1)[:, pad + cls_index, pad:]


@pytest.mark.parametrize("n", [21, 24, 5])  # front padding 3, none, and fewer tokens than landmarks
def test_nystrom_matches_reference_formulation(n: int) -> None:
    torch.manual_seed(0)
    att = NystromAttention(32, dim_head=8, heads=4, num_landmarks=8, residual_conv_kernel=5).eval()
    x = torch.randn(2, n, 32)
    with torch.no_grad():
        out, row = att(x, cls_index=1)
        ref_out, ref_row = _reference_nystrom(att, x, 1)
    assert out.shape == (2, n, 32) and row.shape == (2, n)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(row, ref_row, rtol=1e-4, atol=1e-6)


def test_class_row_is_softmax_attention_when_tokens_are_landmarks() -> None:
    """With one token per landmark the Nystrom matrix is A pinv(A) A = A: the cls row is the
    exact softmax attention (up to 6 pinv iterations), including the zero front padding."""
    torch.manual_seed(1)
    att = NystromAttention(32, dim_head=8, heads=4, num_landmarks=16, residual=False).eval()
    x = torch.randn(1, 13, 32)
    with torch.no_grad():
        _, row = att(x, cls_index=0)
        xp = F.pad(x, (0, 0, 3, 0))
        q, k, _ = (t.reshape(1, 16, 4, 8).transpose(1, 2) for t in att.to_qkv(xp).chunk(3, -1))
        exact = F.softmax(q * 8 ** -0.5 @ k.mT, dim=-1)[:, :, 3].mean(1)[:, 3:]
    torch.testing.assert_close(row, exact, rtol=0, atol=5e-3)


def test_authors_key_layout() -> None:
    sd = create_mil_model("transmil", n_classes=2, in_dim=1024).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    for layer in ("layer1", "layer2"):
        assert shapes[f"{layer}.norm.weight"] == (512,)
        assert shapes[f"{layer}.attn.to_qkv.weight"] == (1536, 512)  # 8 heads x 64, no bias
        assert shapes[f"{layer}.attn.to_out.0.weight"] == (512, 512)
        assert shapes[f"{layer}.attn.res_conv.weight"] == (8, 1, 33, 1)
        assert f"{layer}.attn.to_qkv.bias" not in shapes
    assert shapes["_fc1.0.weight"] == (512, 1024) and shapes["cls_token"] == (1, 1, 512)
    assert shapes["pos_layer.proj.weight"] == (512, 1, 7, 7)
    assert shapes["pos_layer.proj1.weight"] == (512, 1, 5, 5)
    assert shapes["pos_layer.proj2.weight"] == (512, 1, 3, 3)
    assert shapes["norm.weight"] == (512,) and shapes["_fc2.weight"] == (2, 512)
    assert len(shapes) == 25
    assert infer_transmil_config(sd) == {"n_classes": 2, "in_dim": 1024, "embed_dim": 512,
                                         "num_heads": 8, "residual_conv_kernel": 33,
                                         "layout": "original"}


def test_mil_lab_key_layout() -> None:
    model = create_mil_model("transmil", n_classes=3, in_dim=64, layout="mil_lab", num_heads=4,
                             num_layers=3, num_fc_layers=2, embed_dim=32)
    sd = model.state_dict()
    assert {"patch_embed.0.weight", "patch_embed.3.weight", "blocks.2.attention.to_qkv.weight",
            "blocks.0.attention.res_conv.weight", "classifier.weight", "cls_token"} <= set(sd)
    assert infer_transmil_config(sd) == {"n_classes": 3, "in_dim": 64, "embed_dim": 32,
                                         "num_heads": 4, "residual_conv_kernel": 33,
                                         "layout": "mil_lab", "num_layers": 3, "num_fc_layers": 2}


def test_default_model_on_odd_bag() -> None:
    """Default sizes (512-d, 8 heads, 256 landmarks): attention (1, N) probabilities of the real
    instances; the bag-level path scores the whole bag even when a batch size is given."""
    torch.manual_seed(0)
    model = create_mil_model("transmil", n_classes=3, in_dim=64)
    assert isinstance(model, TransMIL) and model.attention_kind == "probability"
    assert not model.instance_independent
    h = _bag(37, 64)
    pred = predict_bag(model, h)
    assert pred.logits.shape == (3,) and pred.attention.shape == (1, 37)
    assert np.isfinite(pred.attention).all() and 0 < pred.attention.sum() <= 1.01
    np.testing.assert_allclose(attention_for_class(model, h, cls=2, batch_size=5), pred.attention[0],
                               atol=1e-6)
    scores = instance_scores_for(model, h, batch_size=5)
    assert scores.shape == (37, 3) and np.isfinite(scores).all()


@pytest.mark.parametrize("n", [1, 2, 36, 37])
def test_square_padding_sizes(n: int) -> None:
    torch.manual_seed(0)
    model = create_mil_model("transmil", n_classes=2, in_dim=16, **SMALL).eval()
    with torch.inference_mode():
        tokens, A = model.encode(_bag(n, 16))
    assert tokens.shape == (1, n + 1, 32) and A.shape == (1, n)


@pytest.mark.parametrize("kw", [{}, {"layout": "mil_lab", "num_layers": 2}])
@pytest.mark.parametrize("wrap", ["bare", "lightning"])
def test_round_trip(tmp_path: Path, kw: dict, wrap: str) -> None:
    torch.manual_seed(0)
    ref = create_mil_model("transmil", n_classes=2, in_dim=24, **SMALL, **kw)
    sd = ref.state_dict()
    if wrap == "lightning":  # the authors' checkpoints: a LightningModule with self.model
        sd = {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 7}
    torch.save(sd, tmp_path / "epoch=7.ckpt")
    loaded = load_mil_checkpoint(tmp_path / "epoch=7.ckpt", model_type="transmil", n_classes=2,
                                 embed_dim=24, model_kwargs={"num_landmarks": 8})
    assert loaded.layout == ref.layout and not loaded.training
    h = _bag(30, 24)
    a, b = predict_bag(ref, h), predict_bag(loaded, h)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.attention, b.attention)
    np.testing.assert_array_equal(instance_scores_for(ref, h), instance_scores_for(loaded, h))


def test_incomplete_checkpoint_names_closest(tmp_path: Path) -> None:
    sd = create_mil_model("transmil", n_classes=2, in_dim=8, **SMALL).state_dict()
    del sd["_fc2.weight"]
    torch.save(sd, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError) as info:
        load_mil_checkpoint(tmp_path / "cut.pt", model_type="transmil")
    assert str(info.value).startswith(
        f"checkpoint {tmp_path / 'cut.pt'} has an unknown layout for model_type transmil and "
        "matches no model_type; closest: transmil (24 of 25 expected keys; missing _fc2.weight); "
        "keys found: ")


def test_transmil_file_as_abmil_names_model_type(tmp_path: Path) -> None:
    for kw in ({}, {"layout": "mil_lab"}):
        torch.save(create_mil_model("transmil", n_classes=2, in_dim=8, **SMALL, **kw).state_dict(),
                   tmp_path / "t.pt")
        with pytest.raises(CheckpointError) as info:
            load_mil_checkpoint(tmp_path / "t.pt", model_type="abmil")
        assert str(info.value) == ("checkpoint t.pt has a transmil layout but "
                                   "model_arguments.model_type is abmil; set model_type: transmil")
