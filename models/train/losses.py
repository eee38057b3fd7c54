"""Losses of the trainers (:mod:`models.train.loop`, :mod:`models.train.module`): the bag loss
(optionally class-weighted), CLAM's instance loss and attention supervision."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..mil import MILModel

__all__ = ["bag_loss", "attention_supervision_loss", "class_weights", "clam_instance_loss", "INSTANCE_LOSSES"]

#: CLAM's ``--inst_loss`` choices. CLAM's ``svm`` is the smooth top-1 SVM of the ``topk`` package
#: (Berrada et al. 2018); here ``svm`` is torch's multi-class hinge loss (``nn.MultiMarginLoss``),
#: its non-smoothed form.
INSTANCE_LOSSES = ("svm", "ce")


def class_weights(labels: np.ndarray, n_classes: int) -> Tensor:
    """Class weights ``w_c = N / (C * n_c)`` (N bags, C classes, n_c bags of class c) (C,) float32;
    a class absent from ``labels`` gets weight 0."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def bag_loss(model: MILModel, logits: Tensor, target: Tensor, *, weight: Tensor | None = None) -> Tensor:
    """Loss of one bag's ``logits`` (1, C) for class ``target`` (1,) int64: cross-entropy, or
    for a multi-label model (``model.multi_label``, DSMIL) binary cross-entropy against the
    one-hot target. ``weight`` (C,): class weights (:func:`class_weights`); for one bag the
    cross-entropy is multiplied by the weight of its class (not renormalised, so the mean over
    an epoch is the weighted loss)."""
    if getattr(model, "multi_label", False):
        onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, onehot)
    else:
        loss = F.cross_entropy(logits, target)
    if weight is not None:
        loss = loss * weight.to(loss.device)[target].mean()
    return loss


def _instance_eval(att: Tensor, hp: Tensor, clf: torch.nn.Module, k: int, *, in_class: bool,
                   loss_fn: str) -> Tensor:
    """CLAM's instance evaluation of one branch: the top-k attended instances are positives of
    this class (in-class) or negatives (out-of-class); in-class, the bottom-k are negatives."""
    top = torch.topk(att, k).indices
    if in_class:
        idx = torch.cat([top, torch.topk(-att, k).indices])
        target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(att.device)
    else:
        idx, target = top, torch.zeros(k, dtype=torch.long, device=att.device)
    logits = clf(hp[idx])
    if loss_fn == "svm":
        return F.multi_margin_loss(logits, target)
    return F.cross_entropy(logits, target)


def clam_instance_loss(model: MILModel, attention: Tensor, hp: Tensor, label: int, *, B: int = 8,
                       inst_loss: str = "svm", subtyping: bool = False) -> Tensor:
    """CLAM's instance-level clustering loss of one bag (Lu et al. 2021).

    ``attention``: raw attention (K, N) (K = 1 for CLAM-SB, C for CLAM-MB); ``hp``: instance
    embeddings h' (N, L); ``label``: the bag's class. For the bag's class, the ``B`` most and
    ``B`` least attended instances (of that class's branch; CLAM-SB: its one branch) are
    pseudo-labelled 1 and 0 for ``instance_classifiers[label]``; with ``subtyping`` (mutually
    exclusive classes) every other class's top ``B`` instances are pseudo-labelled 0 for its
    classifier, and the sum is divided by C. ``B`` is capped at N // 2 (0 instances: loss 0).
    """
    n = attention.shape[1]
    k = min(int(B), n // 2)
    if k < 1:
        return attention.sum() * 0.0
    total = attention.new_zeros(())
    for c, clf in enumerate(model.instance_classifiers):
        branch = attention[c] if attention.shape[0] > 1 else attention[0]
        if c == label:
            total = total + _instance_eval(branch, hp, clf, k, in_class=True, loss_fn=inst_loss)
        elif subtyping:
            total = total + _instance_eval(branch, hp, clf, k, in_class=False, loss_fn=inst_loss)
    if subtyping:
        total = total / len(model.instance_classifiers)
    return total


def attention_supervision_loss(model: MILModel, features: Tensor, share: Tensor, *, cls: int = 1) -> Tensor:
    """Instance supervision of a CLAM model (CLAM layout: ``attention_net``, ``instance_classifiers``)
    from known instance labels, e.g. a synthetic slide's truth.

    ``features``: (N, D) float32 instances; ``share``: (N,) float32 in [0, 1], each instance's
    share of the positive class (lesion). Returns BCE-with-logits of the raw attention of
    branch 0 against ``share`` (so raw attention ~ logit(share)) plus the cross-entropy of
    ``instance_classifiers[cls]`` on ``share > 0.5``.
    """
    emb = model.attention_net[:3](features)       # h' (N, L)
    att = model.attention_net[3](emb)[:, 0]       # raw attention (N,)
    hard = (share > 0.5).to(torch.int64)
    return F.binary_cross_entropy_with_logits(att, share) + F.cross_entropy(model.instance_classifiers[cls](emb), hard)
