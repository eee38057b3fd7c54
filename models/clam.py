"""CLAM-SB and CLAM-MB (Lu et al., "Data-efficient and weakly supervised computational pathology
on whole-slide images", Nat Biomed Eng 2021), inference only, with CLAM's state-dict layout.

Written from the paper and the documented behaviour of ``mahmoodlab/CLAM`` (no code copied).

Layout (``L, H`` = ``512, 256`` for ``model_size='small'``, ``512, 384`` for ``'big'``;
``D`` = ``in_dim``, CLAM's ``embed_dim``; ``K`` = 1 for SB, C for MB):

* ``attention_net`` = Sequential(``0`` Linear(D, L), ``1`` ReLU, ``2`` Dropout(p), ``3`` attention)
  - gated: ``3.attention_a`` = Sequential(Linear(L, H), Tanh[, Dropout]),
    ``3.attention_b`` = Sequential(Linear(L, H), Sigmoid[, Dropout]),
    ``3.attention_c`` = Linear(H, K); A = attention_c(a * b)
  - ungated: ``3.module`` = Sequential(Linear(L, H), Tanh[, Dropout], Linear(H, K)), so the
    last Linear is ``module.2`` without and ``module.3`` with the attention dropout.
* SB: ``classifiers`` = Linear(L, C). MB: ``classifiers.{c}`` = Linear(L, 1) for each class.
* ``instance_classifiers.{c}`` = Linear(L, 2) for each class (training only, kept for strict loads).

Forward: h' = ReLU(Linear(h)) (N, L); A = attention(h') (K, N) raw; SB: M = softmax_N(A) @ h'
(1, L), logits = classifiers(M); MB: M = softmax_N(A) @ h' (C, L), logits[c] = classifiers[c](M[c]).
probs = softmax(logits). The CLAM-MB heatmap shows the attention row of the predicted class.

Instance scores (class score maps, (N, C) logits): the bag classifier applied to each instance
embedding h'_i instead of the pooled M, i.e. the logits the bag would get if all its attention
fell on instance i: SB ``classifiers(h'_i)``; MB ``classifiers[c](h'_i)`` for each class c.
Instances are scored independently (``instance_independent = True``).

MIL-Lab's CLAM-SB (``mahmoodlab/MIL-Lab``, ``src/models/clam.py``; ``layout='mil_lab'``) is ABMIL's
MIL-Lab layout with one attention head - ``patch_embed``, ``global_attn`` (gated or not),
``classifier`` Linear(E, C) - plus ``instance_classifiers.{c}`` Linear(E, 2) (training only):
:class:`ClamSBMilLab`, with ABMIL's forward and maps. MIL-Lab has no CLAM-MB.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .abmil import ABMIL, infer_abmil_config, linear_indices
from .mil import MILModel, register_mil_model

__all__ = ["CLAM_SIZES", "ClamSB", "ClamMB", "ClamSBMilLab", "GatedAttention", "PlainAttention",
           "infer_clam_config"]

#: model_size -> (L, H): hidden width after the first Linear, attention hidden width.
CLAM_SIZES: dict[str, tuple[int, int]] = {"small": (512, 256), "big": (512, 384)}

_ATTN_DROPOUT = 0.25  # CLAM's fixed dropout inside the attention nets (present when dropout > 0)


def _drop(present: bool) -> list[nn.Module]:
    """CLAM's optional Dropout(0.25) layer inside the attention nets."""
    return [nn.Dropout(_ATTN_DROPOUT)] if present else []


class GatedAttention(nn.Module):
    """Gated attention (Ilse et al. 2018): (N, L) -> raw logits (N, K). Keys attention_{a,b,c}."""

    def __init__(self, L: int, H: int, K: int, *, dropout: bool) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(L, H), nn.Tanh(), *_drop(dropout))
        self.attention_b = nn.Sequential(nn.Linear(L, H), nn.Sigmoid(), *_drop(dropout))
        self.attention_c = nn.Linear(H, K)

    def forward(self, x: Tensor) -> Tensor:
        return self.attention_c(self.attention_a(x) * self.attention_b(x))


class PlainAttention(nn.Module):
    """Ungated attention: (N, L) -> raw logits (N, K). Keys module.0 and module.2 (or .3)."""

    def __init__(self, L: int, H: int, K: int, *, dropout: bool) -> None:
        super().__init__()
        self.module = nn.Sequential(nn.Linear(L, H), nn.Tanh(), *_drop(dropout), nn.Linear(H, K))

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)


class _ClamBase(MILModel):
    """Shared trunk of CLAM-SB/MB: ``attention_net`` and ``instance_classifiers``."""

    def __init__(self, *, n_classes: int, in_dim: int, n_branches: int, model_size: str,
                 gate: bool, dropout: float, attn_dropout: bool | None) -> None:
        super().__init__()
        if model_size not in CLAM_SIZES:
            raise ValueError(f"model_size must be one of {sorted(CLAM_SIZES)}, got {model_size!r}")
        L, H = CLAM_SIZES[model_size]
        self.n_classes, self.in_dim, self.n_branches = int(n_classes), int(in_dim), int(n_branches)
        self.model_size, self.gate = model_size, bool(gate)
        use_drop = bool(dropout) if attn_dropout is None else bool(attn_dropout)
        attn_cls = GatedAttention if gate else PlainAttention
        self.attention_net = nn.Sequential(
            nn.Linear(in_dim, L), nn.ReLU(), nn.Dropout(float(dropout)),
            attn_cls(L, H, n_branches, dropout=use_drop),
        )
        self.instance_classifiers = nn.ModuleList(nn.Linear(L, 2) for _ in range(n_classes))

    def _embed_and_attend(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """h (N, D) -> (h' (N, L), raw attention (K, N))."""
        h = self.attention_net[2](self.attention_net[1](self.attention_net[0](h)))
        return h, self.attention_net[3](h).transpose(0, 1)

    def attention_scores(self, h: Tensor) -> Tensor:
        return self._embed_and_attend(self._as_bag(h))[1]

    def _embed(self, h: Tensor) -> Tensor:
        """h (N, D) -> h' (N, L) = Dropout(ReLU(Linear(h)))."""
        return self.attention_net[2](self.attention_net[1](self.attention_net[0](self._as_bag(h))))

    def _pool(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """h (N, D) -> (pooled M (K, L), raw attention (K, N))."""
        M, A, _ = self.pool_with_embedding(h)
        return M, A

    def pool_with_embedding(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h (N, D) -> (pooled M (K, L), raw attention (K, N), instance embeddings h' (N, L));
        h' feeds CLAM's instance classifiers in training (``models.train.losses.clam_instance_loss``)."""
        hp, A = self._embed_and_attend(self._as_bag(h))
        return F.softmax(A, dim=1) @ hp, A, hp

    def bag_logits(self, M: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Pooled M (K, L) -> logits (1, C)."""
        raise NotImplementedError

    def forward_with_embedding(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h (N, D) -> (logits (1, C), raw attention (K, N), h' (N, L)) in one pass (training)."""
        M, A, hp = self.pool_with_embedding(h)
        return self.bag_logits(M), A, hp


class ClamSB(_ClamBase):
    """CLAM single-branch: one attention branch, ``classifiers`` = Linear(L, C).

    attention (1, N): raw pre-softmax logits. instance_scores (N, C): ``classifiers(h'_i)``.
    """

    def __init__(self, *, n_classes: int, in_dim: int = 1024, model_size: str = "small",
                 gate: bool = True, dropout: float = 0.0, attn_dropout: bool | None = None) -> None:
        super().__init__(n_classes=n_classes, in_dim=in_dim, n_branches=1, model_size=model_size,
                         gate=gate, dropout=dropout, attn_dropout=attn_dropout)
        self.classifiers = nn.Linear(CLAM_SIZES[model_size][0], n_classes)

    def bag_logits(self, M: Tensor) -> Tensor:
        return self.classifiers(M)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        M, A = self._pool(h)
        logits = self.bag_logits(M)
        return logits, F.softmax(logits, dim=1), A

    def instance_scores(self, h: Tensor) -> Tensor:
        """(N, C) logits ``classifiers(h'_i)`` of each instance embedding."""
        return self.classifiers(self._embed(h))


class ClamMB(_ClamBase):
    """CLAM multi-branch: one attention branch and one Linear(L, 1) classifier per class.

    attention (C, N): raw pre-softmax logits, row c = branch of class c.
    instance_scores (N, C): column c = ``classifiers[c](h'_i)``.
    """

    def __init__(self, *, n_classes: int, in_dim: int = 1024, model_size: str = "small",
                 gate: bool = True, dropout: float = 0.0, attn_dropout: bool | None = None) -> None:
        super().__init__(n_classes=n_classes, in_dim=in_dim, n_branches=n_classes,
                         model_size=model_size, gate=gate, dropout=dropout,
                         attn_dropout=attn_dropout)
        L = CLAM_SIZES[model_size][0]
        self.classifiers = nn.ModuleList(nn.Linear(L, 1) for _ in range(n_classes))

    def bag_logits(self, M: Tensor) -> Tensor:
        return torch.cat([clf(M[c]) for c, clf in enumerate(self.classifiers)]).unsqueeze(0)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        M, A = self._pool(h)
        logits = self.bag_logits(M)
        return logits, F.softmax(logits, dim=1), A

    def instance_scores(self, h: Tensor) -> Tensor:
        """(N, C) logits; column c = ``classifiers[c](h'_i)``."""
        hp = self._embed(h)
        return torch.cat([clf(hp) for clf in self.classifiers], dim=1)

    def heatmap_row(self, attention: Tensor, cls: int) -> Tensor:
        """CLAM-MB shows the branch of class ``cls`` (the predicted class in CLAM)."""
        return attention[cls]


class ClamSBMilLab(ABMIL):
    """CLAM-SB in MIL-Lab's layout: a one-head :class:`~models.abmil.ABMIL` (its forward, raw
    attention (1, N) and instance scores ``classifier(h'_i)``) that also carries MIL-Lab's
    ``instance_classifiers.{c}`` Linear(E, 2), unused at inference, so its weights load strictly."""

    def __init__(self, *, n_classes: int, in_dim: int = 1024, embed_dim: int = 512,
                 attn_dim: int = 384, gate: bool = True, num_fc_layers: int = 1,
                 dropout: float = 0.25) -> None:
        super().__init__(n_classes=n_classes, in_dim=in_dim, embed_dim=embed_dim, attn_dim=attn_dim,
                         gate=gate, num_fc_layers=num_fc_layers, num_heads=1, dropout=dropout)
        self.instance_classifiers = nn.ModuleList(nn.Linear(embed_dim, 2) for _ in range(n_classes))


# --------------------------------------------------------------------------- layout inference

def _size_name(L: int, H: int) -> str | None:
    return next((n for n, lh in CLAM_SIZES.items() if lh == (L, H)), None)


def infer_clam_config(sd: Mapping[str, Tensor], *, multi_branch: bool) -> dict[str, Any] | None:
    """Builder kwargs of a CLAM-SB (``multi_branch=False``) or CLAM-MB state dict, or None.

    Reads ``in_dim`` (D), ``model_size`` (from L, H), ``n_classes``, ``gate`` and, for the
    ungated net, whether the attention dropout layer is present (``module.3`` vs ``module.2``).
    Returns None when the keys are not that layout or the hidden sizes match no CLAM size.
    """
    w0 = sd.get("attention_net.0.weight")
    if w0 is None or w0.dim() != 2:
        return None
    L, D = (int(s) for s in w0.shape)
    if "attention_net.3.attention_a.0.weight" in sd:
        gate, H = True, int(sd["attention_net.3.attention_a.0.weight"].shape[0])
        k_w, attn_drop = sd.get("attention_net.3.attention_c.weight"), None
    elif "attention_net.3.module.0.weight" in sd:
        gate, H = False, int(sd["attention_net.3.module.0.weight"].shape[0])
        last = [i for i in linear_indices(sd, "attention_net.3.module.") if i > 0]
        if not last:
            return None
        k_w, attn_drop = sd[f"attention_net.3.module.{last[-1]}.weight"], last[-1] == 3
    else:
        return None
    size = _size_name(L, H)
    if k_w is None or size is None:
        return None
    K = int(k_w.shape[0])
    if multi_branch:
        idx = linear_indices(sd, "classifiers.")
        if not idx or "classifiers.weight" in sd:
            return None
        n_classes = len(idx)
        if K != n_classes:
            return None
    else:
        if "classifiers.weight" not in sd or K != 1:
            return None
        n_classes = int(sd["classifiers.weight"].shape[0])
    return {"n_classes": n_classes, "in_dim": D, "model_size": size, "gate": gate,
            "attn_dropout": attn_drop}


def infer_mil_lab_clam_sb(sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """Builder kwargs of a MIL-Lab CLAM-SB state dict (ABMIL's keys with one attention head and a
    linear classifier, plus one ``instance_classifiers.{c}`` per class), or None."""
    cfg = infer_abmil_config({k: v for k, v in sd.items() if not k.startswith("instance_classifiers.")})
    if cfg is None or cfg["num_heads"] != 1 or cfg["head_dim"] is not None:
        return None
    if linear_indices(sd, "instance_classifiers.") != list(range(cfg["n_classes"])):
        return None
    return {k: cfg[k] for k in ("n_classes", "in_dim", "embed_dim", "attn_dim", "gate", "num_fc_layers")} \
        | {"layout": "mil_lab"}


_HINT = "attention_net.0.weight, attention_net.3.attention_a.0.weight, classifiers"
_VARIANTS = ({"gate": True}, {"gate": False, "dropout": 0.0}, {"gate": False, "dropout": 0.25})


@register_mil_model("clam_sb", key_hint=_HINT + ".weight (MIL-Lab: patch_embed.0.weight, instance_classifiers.0.weight)",
                    infer=lambda sd: infer_clam_config(sd, multi_branch=False) or infer_mil_lab_clam_sb(sd),
                    variants=(*_VARIANTS, {"layout": "mil_lab"}))
def clam_sb(*, n_classes: int, in_dim: int = 1024, layout: str = "clam", **kw: Any) -> ClamSB | ClamSBMilLab:
    """CLAM-SB; kw: model_size ('small'|'big'), gate, dropout, attn_dropout; ``layout='mil_lab'``:
    MIL-Lab's CLAM-SB (kw: embed_dim, attn_dim, gate, num_fc_layers, dropout)."""
    if layout == "mil_lab":
        return ClamSBMilLab(n_classes=n_classes, in_dim=in_dim, **kw)
    if layout != "clam":
        raise ValueError(f"clam_sb layout must be 'clam' or 'mil_lab', got {layout!r}")
    return ClamSB(n_classes=n_classes, in_dim=in_dim, **kw)


@register_mil_model("clam_mb", infer=lambda sd: infer_clam_config(sd, multi_branch=True),
                    key_hint=_HINT + ".0.weight", variants=_VARIANTS)
def clam_mb(*, n_classes: int, in_dim: int = 1024, **kw: Any) -> ClamMB:
    """CLAM-MB; kw: model_size ('small'|'big'), gate, dropout, attn_dropout."""
    return ClamMB(n_classes=n_classes, in_dim=in_dim, **kw)
