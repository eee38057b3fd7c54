"""ABMIL (Ilse, Tomczak & Welling, "Attention-based Deep Multiple Instance Learning", ICML 2018),
inference only, in the state-dict layout of ``mahmoodlab/MIL-Lab`` (``src/models/abmil.py``).

Layout (``D`` = ``in_dim``, ``E`` = ``embed_dim``, ``A`` = ``attn_dim``, ``K`` = ``num_heads``):

* ``patch_embed`` = MLP of ``num_fc_layers`` Linear layers, each followed by ReLU, with Dropout
  between them: Linear(D, E) at ``patch_embed.0``, then ``patch_embed.3``, ``.6`` ... (Linear(E, E)).
* ``global_attn``: gated -> ``attention_a.0`` Linear(E, A) + Tanh, ``attention_b.0`` Linear(E, A)
  + Sigmoid, ``attention_c`` Linear(A, K); ungated -> ``module.0`` Linear(E, A), Tanh, Dropout,
  ``module.3`` Linear(A, K).
* ``classifier``: Linear(K * E, C) (MIL-Lab), or, with ``head_dim`` set, a 2-layer MLP head
  ``classifier.0`` Linear(K * E, head_dim), ReLU, Dropout, ``classifier.3`` Linear(head_dim, C).

Forward: h' = patch_embed(h) (N, E); A = global_attn(h') (K, N) raw; M = softmax_N(A) @ h' (K, E),
flattened to (1, K * E); logits = classifier(M); probs = softmax(logits). A checkpoint saved from
MIL-Lab's Hugging Face wrapper has a leading ``model.`` on every key, which the loader strips.

Instance scores (class score maps, (N, C) logits): the classifier applied to each instance
embedding h'_i put in every head's slot, ``classifier([h'_i] * K)``, i.e. the logits the bag would
get if every head attended to instance i alone. Instances are scored independently.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from .mil import MILModel, register_mil_model

__all__ = ["ABMIL", "infer_abmil_config", "patch_embed_mlp", "linear_indices"]


def patch_embed_mlp(in_dim: int, width: int, n_layers: int, dropout: float) -> nn.Sequential:
    """MIL-Lab ``patch_embed``: [Linear, ReLU, Dropout] * (n - 1) + [Linear, ReLU]."""
    layers: list[nn.Module] = []
    for _ in range(n_layers - 1):
        layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = width
    return nn.Sequential(*layers, nn.Linear(in_dim, width), nn.ReLU())


class _Gated(nn.Module):
    def __init__(self, E: int, A: int, K: int, dropout: float) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(E, A), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(E, A), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(A, K)

    def forward(self, x: Tensor) -> Tensor:
        return self.attention_c(self.attention_a(x) * self.attention_b(x))


class _Plain(nn.Module):
    def __init__(self, E: int, A: int, K: int, dropout: float) -> None:
        super().__init__()
        self.module = nn.Sequential(nn.Linear(E, A), nn.Tanh(), nn.Dropout(dropout), nn.Linear(A, K))

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)


class ABMIL(MILModel):
    """Attention-based MIL; K heads pooled independently and concatenated for the classifier.

    attention (K, N): raw pre-softmax logits (a heatmap shows their mean over heads when K > 1).
    instance_scores (N, C): ``classifier(concat([h'_i] * K))``.
    """

    def __init__(self, *, n_classes: int, in_dim: int = 1024, embed_dim: int = 512,
                 attn_dim: int = 384, gate: bool = True, num_fc_layers: int = 1,
                 num_heads: int = 1, dropout: float = 0.25, head_dim: int | None = None) -> None:
        super().__init__()
        if num_fc_layers < 1 or num_heads < 1:
            raise ValueError("num_fc_layers and num_heads must be >= 1")
        self.n_classes, self.in_dim, self.n_branches = int(n_classes), int(in_dim), int(num_heads)
        self.gate = bool(gate)
        self.patch_embed = patch_embed_mlp(in_dim, embed_dim, num_fc_layers, dropout)
        self.global_attn = (_Gated if gate else _Plain)(embed_dim, attn_dim, num_heads, dropout)
        flat = embed_dim * num_heads
        if head_dim is None:
            self.classifier: nn.Module = nn.Linear(flat, n_classes)
        else:
            self.classifier = nn.Sequential(nn.Linear(flat, head_dim), nn.ReLU(),
                                            nn.Dropout(dropout), nn.Linear(head_dim, n_classes))

    def _embed_and_attend(self, h: Tensor) -> tuple[Tensor, Tensor]:
        hp = self.patch_embed(self._as_bag(h))
        return hp, self.global_attn(hp).transpose(0, 1)

    def attention_scores(self, h: Tensor) -> Tensor:
        return self._embed_and_attend(h)[1]

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hp, A = self._embed_and_attend(h)
        M = (F.softmax(A, dim=1) @ hp).reshape(1, -1)
        logits = self.classifier(M)
        return logits, F.softmax(logits, dim=1), A

    def instance_scores(self, h: Tensor) -> Tensor:
        """(N, C) logits of each instance embedding repeated in every head slot."""
        hp = self.patch_embed(self._as_bag(h))
        return self.classifier(hp.repeat(1, self.n_branches))


def linear_indices(sd: Mapping[str, Tensor], prefix: str) -> list[int]:
    """Sorted integer indices ``i`` of the keys ``{prefix}{i}.weight`` (the Linear layers of a
    Sequential in a state dict)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.weight$")
    return sorted(int(m.group(1)) for k in sd if (m := pat.match(k)))


def infer_abmil_config(sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """Builder kwargs of an ABMIL (MIL-Lab layout) state dict read from tensor shapes, or None
    (also for MIL-Lab's CLAM-SB, whose ``instance_classifiers`` make it a ``clam_sb``)."""
    embed_idx = linear_indices(sd, "patch_embed.")
    if any(k.startswith("instance_classifiers.") for k in sd):
        return None
    if not embed_idx or embed_idx != list(range(0, 3 * len(embed_idx), 3)):
        return None
    w0 = sd["patch_embed.0.weight"]
    E, D = (int(s) for s in w0.shape)
    if "global_attn.attention_a.0.weight" in sd and "global_attn.attention_c.weight" in sd:
        gate, A = True, int(sd["global_attn.attention_a.0.weight"].shape[0])
        K = int(sd["global_attn.attention_c.weight"].shape[0])
    elif "global_attn.module.0.weight" in sd and "global_attn.module.3.weight" in sd:
        gate, A = False, int(sd["global_attn.module.0.weight"].shape[0])
        K = int(sd["global_attn.module.3.weight"].shape[0])
    else:
        return None
    head_dim = None
    if "classifier.weight" in sd:
        n_classes = int(sd["classifier.weight"].shape[0])
    elif "classifier.0.weight" in sd and "classifier.3.weight" in sd:
        head_dim = int(sd["classifier.0.weight"].shape[0])
        n_classes = int(sd["classifier.3.weight"].shape[0])
    else:
        return None
    return {"n_classes": n_classes, "in_dim": D, "embed_dim": E, "attn_dim": A, "gate": gate,
            "num_fc_layers": len(embed_idx), "num_heads": K, "head_dim": head_dim}


@register_mil_model("abmil", infer=infer_abmil_config,
                    key_hint="patch_embed.0.weight, global_attn.attention_a.0.weight, classifier.weight",
                    variants=({"gate": True}, {"gate": False}, {"gate": True, "head_dim": 32}))
def abmil(*, n_classes: int, in_dim: int = 1024, **kw: Any) -> ABMIL:
    """ABMIL; kw: embed_dim, attn_dim, gate, num_fc_layers, num_heads, dropout, head_dim."""
    return ABMIL(n_classes=n_classes, in_dim=in_dim, **kw)
