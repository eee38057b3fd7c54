"""DSMIL (Li, Li & Eliceiri, "Dual-stream multiple instance learning network for whole slide image
classification with self-supervised contrastive learning", CVPR 2021), in the state-dict layouts
of the authors' aggregators (``binli123/dsmil-wsi``, ``dsmil.py``: ``MILNet(FCLayer, BClassifier)``)
and of ``mahmoodlab/MIL-Lab`` (``src/models/dsmil.py``). Written from the paper and the documented
behaviour of both repositories (no code copied).

Original layout (``layout='original'``; ``D`` = ``in_dim``, ``C`` = ``n_classes``, ``Q`` =
``q_dim`` (128)):

* ``i_classifier.fc.0`` Linear(D, C): the instance stream (max-pooling branch), scores (N, C).
* ``b_classifier.q``: Linear(D, Q) (``nonlinear=False``: key ``q.weight``) or Sequential(Linear(D,
  Q), ReLU, Linear(Q, Q), Tanh) (``nonlinear=True``: keys ``q.0``, ``q.2``; the authors' released
  ``c16_aggregator.pth`` / ``tcga_aggregator.pth``).
* ``b_classifier.v``: Identity (no keys; ``passing_v=False``, the released aggregators) or
  Sequential(Dropout, Linear(D, D)[, ReLU]) (key ``v.1``). The authors' early code had no ReLU and
  a linear q; their later ``passing_v`` adds the ReLU and came with the nonlinear q. The keys do not
  tell them apart, so ``v_relu`` defaults to ``nonlinear`` (a linear q with ``v.1`` = early code).
* ``b_classifier.fcc`` Conv1d(C, C, kernel_size=D): bag logits from the C class-wise bag vectors.

Forward on a bag (N, D): c = i_classifier(h) (N, C) instance scores; the critical instance of
class j is argmax_i c[i, j] (first on ties); raw attention R[j, i] = <q(h_i), q(h_crit_j)> /
sqrt(Q) (C, N); A = softmax over instances of R; bag vectors B = A @ v(h) (C, D); bag logits =
fcc(B) (1, C). ``combine='bag'`` (default, the authors' test scripts without ``--average``): logits
= bag logits, probs = sigmoid(logits). ``combine='mean'`` (``--average``): probs = (sigmoid(bag
logits) + sigmoid(max_i c[i])) / 2 and logits = logit(probs). DSMIL is trained multi-label (BCE),
so ``probs`` are per-class sigmoids, not a softmax (``multi_label = True``); ``pred`` stays
argmax of the logits. A 1-class aggregator (Camelyon16) gives the tumour probability.

MIL-Lab layout (``layout='mil_lab'``; ``E`` = ``embed_dim`` (512), ``Q`` = ``q_dim`` (MIL-Lab's
``attn_dim``, 384)): ``patch_embed`` (ABMIL's MLP of ``num_fc_layers`` Linear+ReLU, D -> E) first;
``i_classifier.inst_classifier`` Linear(E, C); ``b_classifier.q`` Linear(E, Q);
``b_classifier.v`` Sequential(Dropout, Linear(E, E)); ``b_classifier.norm`` LayerNorm(E) on the bag
vectors; ``b_classifier.fcc`` Conv1d(3, 3, E), present in MIL-Lab's weights but unused by its
forward (kept for strict loading); ``classifier`` Conv1d(C, C, E) gives the bag logits from
LayerNorm(A @ v(h)). MIL-Lab returns logits = (bag logits + max_i c[i]) / 2 (``combine=
'logit_mean'``, its default here) and trains them with cross-entropy, so probs = softmax(logits)
(``multi_label`` False for this layout). The same R and c define the maps, on the embedded
instances.

Heatmaps: ``attention`` (C, N) is the raw pre-softmax R (so softmax_N(R[c]) is the authors' A[:, c]
that ``attention_map.py`` colours); a heatmap of class c shows row c. ``instance_scores`` (N, C)
are the instance-stream logits c. R depends on the critical instance, i.e. on the whole bag
(``instance_independent = False``).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .abmil import linear_indices, patch_embed_mlp
from .mil import MILModel, register_mil_model

__all__ = ["DSMIL", "infer_dsmil_config", "COMBINE_MODES", "LAYOUTS"]

COMBINE_MODES = ("bag", "mean", "logit_mean")
LAYOUTS = ("original", "mil_lab")


class FCLayer(nn.Module):
    """The instance stream: ``fc`` = Sequential(Linear(D, C)); (N, D) -> scores (N, C)."""

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_dim, n_classes))

    def forward(self, h: Tensor) -> Tensor:
        return self.fc(h)


class BClassifier(nn.Module):
    """The bag stream: queries ``q``, values ``v`` and the class-mixing Conv1d ``fcc``."""

    def __init__(self, in_dim: int, n_classes: int, *, q_dim: int, nonlinear: bool,
                 passing_v: bool, v_relu: bool, dropout_v: float) -> None:
        super().__init__()
        self.q_dim = int(q_dim)
        self.q: nn.Module = (nn.Sequential(nn.Linear(in_dim, q_dim), nn.ReLU(),
                                           nn.Linear(q_dim, q_dim), nn.Tanh())
                             if nonlinear else nn.Linear(in_dim, q_dim))
        v_layers: list[nn.Module] = [nn.Dropout(dropout_v), nn.Linear(in_dim, in_dim)]
        self.v: nn.Module = (nn.Sequential(*v_layers, *([nn.ReLU()] if v_relu else []))
                             if passing_v else nn.Identity())
        self.fcc = nn.Conv1d(n_classes, n_classes, kernel_size=in_dim)

    def attention_logits(self, h: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """h (N, D), instance scores (N, C) -> (raw attention R (C, N), queries Q (N, q_dim))."""
        return _critical_attention(self.q(h), scores, self.q_dim)

    def forward(self, h: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """h (N, D), scores (N, C) -> (bag logits (1, C), raw attention R (C, N))."""
        R, _ = self.attention_logits(h, scores)
        B = F.softmax(R, dim=1) @ self.v(h)  # (C, D)
        return self.fcc(B.unsqueeze(0)).reshape(1, -1), R


class _InstanceClassifier(nn.Module):
    """MIL-Lab's instance stream: ``inst_classifier`` Linear(E, C); (N, E) -> scores (N, C)."""

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.inst_classifier = nn.Linear(in_dim, n_classes)

    def forward(self, h: Tensor) -> Tensor:
        return self.inst_classifier(h)


class _MilLabBagStream(nn.Module):
    """MIL-Lab's bag stream: linear ``q``, ``v`` = Dropout + Linear, ``norm`` on the bag vectors and
    the unused ``fcc`` Conv1d(3, 3, E) its weights carry."""

    def __init__(self, in_dim: int, *, q_dim: int, dropout_v: float) -> None:
        super().__init__()
        self.q_dim = int(q_dim)
        self.q = nn.Linear(in_dim, q_dim)
        self.v = nn.Sequential(nn.Dropout(dropout_v), nn.Linear(in_dim, in_dim))
        self.norm = nn.LayerNorm(in_dim)
        self.fcc = nn.Conv1d(3, 3, kernel_size=in_dim)

    def attention_logits(self, h: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """h (N, E), instance scores (N, C) -> (raw attention R (C, N), queries (N, q_dim))."""
        return _critical_attention(self.q(h), scores, self.q_dim)

    def forward(self, h: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """h (N, E), scores (N, C) -> (normed bag vectors (1, C, E), raw attention R (C, N))."""
        R, _ = self.attention_logits(h, scores)
        return self.norm(F.softmax(R, dim=1) @ self.v(h)).unsqueeze(0), R


def _critical_attention(Q: Tensor, scores: Tensor, q_dim: int) -> tuple[Tensor, Tensor]:
    """Queries Q (N, q_dim), instance scores (N, C) -> (R (C, N) = <q_crit_c, q_i> / sqrt(q_dim), Q);
    the critical instance of class c is argmax_i scores[i, c] (first on ties)."""
    return (Q[scores.argmax(dim=0)] @ Q.transpose(0, 1)) / (q_dim ** 0.5), Q


class DSMIL(MILModel):
    """DSMIL; see the module docstring for the layouts, the combine modes and the maps.

    attention (C, N): raw pre-softmax <q_i, q_crit_c> / sqrt(Q); heatmap of class c = row c.
    instance_scores (N, C): the instance-stream (``i_classifier``) logits.
    ``combine``: None = the layout's own ('bag' original, 'logit_mean' MIL-Lab).
    """

    instance_independent = False

    def __init__(self, *, n_classes: int, in_dim: int = 512, q_dim: int = 128,
                 nonlinear: bool = True, passing_v: bool = False, v_relu: bool | None = None,
                 dropout_v: float = 0.0, combine: str | None = None, layout: str = "original",
                 embed_dim: int = 512, num_fc_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"dsmil layout must be one of {LAYOUTS}, got {layout!r}")
        combine = combine or ("bag" if layout == "original" else "logit_mean")
        if combine not in COMBINE_MODES:
            raise ValueError(f"dsmil combine must be one of {COMBINE_MODES}, got {combine!r}")
        if combine == "mean" and layout == "mil_lab":
            raise ValueError("dsmil combine 'mean' averages the authors' per-class sigmoids; a "
                             "MIL-Lab model is softmax-trained: use 'logit_mean' (its own) or 'bag'")
        self.n_classes, self.in_dim, self.n_branches = int(n_classes), int(in_dim), int(n_classes)
        self.layout, self.combine = layout, combine
        #: per-class sigmoids (the authors' BCE training) or a softmax (MIL-Lab's cross-entropy)
        self.multi_label = layout == "original"
        if layout == "original":  # ``dropout`` (model_arguments.drop_out) shapes MIL-Lab's patch_embed only
            self.i_classifier: nn.Module = FCLayer(in_dim, n_classes)
            self.b_classifier: nn.Module = BClassifier(
                in_dim, n_classes, q_dim=q_dim, nonlinear=nonlinear, passing_v=passing_v,
                v_relu=nonlinear if v_relu is None else v_relu, dropout_v=dropout_v)
        else:
            self.patch_embed = patch_embed_mlp(in_dim, embed_dim, num_fc_layers, dropout)
            self.i_classifier = _InstanceClassifier(embed_dim, n_classes)
            self.b_classifier = _MilLabBagStream(embed_dim, q_dim=q_dim, dropout_v=dropout_v)
            self.classifier = nn.Conv1d(n_classes, n_classes, kernel_size=embed_dim)

    def _embed(self, h: Tensor) -> Tensor:
        h = self._as_bag(h)
        return h if self.layout == "original" else self.patch_embed(h)

    def streams(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h (N, D) -> (instance scores (N, C), bag logits (1, C), raw attention (C, N))."""
        h = self._embed(h)
        scores = self.i_classifier(h)
        if self.layout == "original":
            bag_logits, R = self.b_classifier(h, scores)
        else:
            bag, R = self.b_classifier(h, scores)
            bag_logits = self.classifier(bag).reshape(1, -1)
        return scores, bag_logits, R

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        scores, logits, R = self.streams(h)
        top = scores.max(dim=0, keepdim=True)[0]
        if self.combine == "mean":  # the authors' --average: mean of the two probabilities
            probs = 0.5 * (torch.sigmoid(logits) + torch.sigmoid(top))
            return torch.logit(probs, eps=1e-7), probs, R
        if self.combine == "logit_mean":
            logits = 0.5 * (logits + top)
        return logits, torch.sigmoid(logits) if self.multi_label else F.softmax(logits, dim=1), R

    def attention_scores(self, h: Tensor) -> Tensor:
        """Raw attention (C, N) of the whole bag ``h`` (N, D)."""
        h = self._embed(h)
        return self.b_classifier.attention_logits(h, self.i_classifier(h))[0]

    def instance_scores(self, h: Tensor) -> Tensor:
        """Instance-stream logits (N, C) (independent per instance)."""
        return self.i_classifier(self._embed(h))

    def heatmap_row(self, attention: Tensor, cls: int) -> Tensor:
        """Row ``cls``: the attention towards class ``cls``'s critical instance."""
        return attention[cls]


def _infer_original(sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    w_i, fcc = sd.get("i_classifier.fc.0.weight"), sd.get("b_classifier.fcc.weight")
    if w_i is None or fcc is None or w_i.dim() != 2 or fcc.dim() != 3:
        return None
    C, D = (int(s) for s in w_i.shape)
    if tuple(fcc.shape) != (C, C, D):
        return None
    if "b_classifier.q.0.weight" in sd and "b_classifier.q.2.weight" in sd:
        nonlinear, Q = True, int(sd["b_classifier.q.0.weight"].shape[0])
    elif "b_classifier.q.weight" in sd:
        nonlinear, Q = False, int(sd["b_classifier.q.weight"].shape[0])
    else:
        return None
    return {"n_classes": C, "in_dim": D, "q_dim": Q, "nonlinear": nonlinear,
            "passing_v": "b_classifier.v.1.weight" in sd}


def _infer_mil_lab(sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    w_i, head, w_q = (sd.get(k) for k in ("i_classifier.inst_classifier.weight", "classifier.weight",
                                         "b_classifier.q.weight"))
    fcs = linear_indices(sd, "patch_embed.")
    if w_i is None or head is None or w_q is None or not fcs or w_i.dim() != 2 or head.dim() != 3:
        return None
    C, E = (int(s) for s in w_i.shape)
    if tuple(head.shape) != (C, C, E) or fcs != list(range(0, 3 * len(fcs), 3)):
        return None
    return {"n_classes": C, "in_dim": int(sd["patch_embed.0.weight"].shape[1]), "embed_dim": E,
            "q_dim": int(w_q.shape[0]), "num_fc_layers": len(fcs), "layout": "mil_lab"}


def infer_dsmil_config(sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """Builder kwargs of a DSMIL state dict, or None. Original layout (``i_classifier.fc.0``,
    ``b_classifier.*``): D, C, Q, whether q is nonlinear and whether v is a Linear
    (``passing_v``). MIL-Lab layout (``patch_embed``, ``i_classifier.inst_classifier``,
    ``classifier``): D, E, C, Q and the number of ``patch_embed`` layers."""
    return _infer_original(sd) or _infer_mil_lab(sd)


@register_mil_model("dsmil", infer=infer_dsmil_config,
                    key_hint="i_classifier.fc.0.weight, b_classifier.q.0.weight, b_classifier.fcc.weight "
                             "(MIL-Lab: patch_embed.0.weight, i_classifier.inst_classifier.weight, classifier.weight)",
                    variants=({"nonlinear": True, "passing_v": False},
                              {"nonlinear": False, "passing_v": True},
                              {"layout": "mil_lab"}))
def dsmil(*, n_classes: int, in_dim: int = 512, **kw: Any) -> DSMIL:
    """DSMIL; kw: q_dim, nonlinear, passing_v, v_relu, dropout_v, combine ('bag'|'mean'|
    'logit_mean'), layout ('original'|'mil_lab'), embed_dim, num_fc_layers, dropout."""
    return DSMIL(n_classes=n_classes, in_dim=in_dim, **kw)
