"""DSMIL (Li, Li & Eliceiri, "Dual-stream multiple instance learning network for whole slide image
classification with self-supervised contrastive learning", CVPR 2021), in the state-dict layout of
the authors' aggregators (``binli123/dsmil-wsi``, ``dsmil.py``: ``MILNet(FCLayer, BClassifier)``).
Written from the paper and the documented behaviour of that repository (no code copied).

Layout (``D`` = ``in_dim``, ``C`` = ``n_classes``, ``Q`` = ``q_dim`` (128)):

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

from .mil import MILModel, register_mil_model

__all__ = ["DSMIL", "infer_dsmil_config", "COMBINE_MODES"]

COMBINE_MODES = ("bag", "mean")


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
        Q = self.q(h)
        q_crit = Q[scores.argmax(dim=0)]  # (C, q_dim): queries of the critical instances
        return (q_crit @ Q.transpose(0, 1)) / (self.q_dim ** 0.5), Q

    def forward(self, h: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """h (N, D), scores (N, C) -> (bag logits (1, C), raw attention R (C, N))."""
        R, _ = self.attention_logits(h, scores)
        B = F.softmax(R, dim=1) @ self.v(h)  # (C, D)
        return self.fcc(B.unsqueeze(0)).reshape(1, -1), R


class DSMIL(MILModel):
    """DSMIL; see the module docstring for the layout, the combine modes and the maps.

    attention (C, N): raw pre-softmax <q_i, q_crit_c> / sqrt(Q); heatmap of class c = row c.
    instance_scores (N, C): the instance-stream (``i_classifier``) logits.
    """

    instance_independent = False
    multi_label = True

    def __init__(self, *, n_classes: int, in_dim: int = 512, q_dim: int = 128,
                 nonlinear: bool = True, passing_v: bool = False, v_relu: bool | None = None,
                 dropout_v: float = 0.0, combine: str = "bag", dropout: float = 0.0) -> None:
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ValueError(f"dsmil combine must be one of {COMBINE_MODES}, got {combine!r}")
        del dropout  # the generic loader passes model_arguments.drop_out; DSMIL uses dropout_v
        self.n_classes, self.in_dim, self.n_branches = int(n_classes), int(in_dim), int(n_classes)
        self.combine = combine
        self.i_classifier = FCLayer(in_dim, n_classes)
        self.b_classifier = BClassifier(in_dim, n_classes, q_dim=q_dim, nonlinear=nonlinear,
                                        passing_v=passing_v,
                                        v_relu=nonlinear if v_relu is None else v_relu,
                                        dropout_v=dropout_v)

    def streams(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h (N, D) -> (instance scores (N, C), bag logits (1, C), raw attention (C, N))."""
        h = self._as_bag(h)
        scores = self.i_classifier(h)
        bag_logits, R = self.b_classifier(h, scores)
        return scores, bag_logits, R

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        scores, logits, R = self.streams(h)
        if self.combine == "bag":
            return logits, torch.sigmoid(logits), R
        probs = 0.5 * (torch.sigmoid(logits) + torch.sigmoid(scores.max(dim=0, keepdim=True)[0]))
        return torch.logit(probs, eps=1e-7), probs, R

    def attention_scores(self, h: Tensor) -> Tensor:
        """Raw attention (C, N) of the whole bag ``h`` (N, D)."""
        h = self._as_bag(h)
        return self.b_classifier.attention_logits(h, self.i_classifier(h))[0]

    def instance_scores(self, h: Tensor) -> Tensor:
        """Instance-stream logits (N, C) (independent per instance)."""
        return self.i_classifier(self._as_bag(h))

    def heatmap_row(self, attention: Tensor, cls: int) -> Tensor:
        """Row ``cls``: the attention towards class ``cls``'s critical instance."""
        return attention[cls]


def infer_dsmil_config(sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """Builder kwargs of a DSMIL aggregator state dict (``i_classifier.fc.0``, ``b_classifier.*``),
    or None. Reads D, C, Q, whether q is nonlinear and whether v is a Linear (``passing_v``)."""
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


@register_mil_model("dsmil", infer=infer_dsmil_config,
                    key_hint="i_classifier.fc.0.weight, b_classifier.q.0.weight, b_classifier.fcc.weight",
                    variants=({"nonlinear": True, "passing_v": False},
                              {"nonlinear": False, "passing_v": True}))
def dsmil(*, n_classes: int, in_dim: int = 512, **kw: Any) -> DSMIL:
    """DSMIL; kw: q_dim, nonlinear, passing_v, v_relu, dropout_v, combine ('bag'|'mean')."""
    return DSMIL(n_classes=n_classes, in_dim=in_dim, **kw)
