"""Losses of the training loop (:mod:`models.train.loop`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..mil import MILModel

__all__ = ["bag_loss", "attention_supervision_loss"]


def bag_loss(model: MILModel, logits: Tensor, target: Tensor) -> Tensor:
    """Loss of one bag's ``logits`` (1, C) for class ``target`` (1,) int64: cross-entropy, or
    for a multi-label model (``model.multi_label``, DSMIL) binary cross-entropy against the
    one-hot target."""
    if getattr(model, "multi_label", False):
        onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, onehot)
    return F.cross_entropy(logits, target)


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
