"""The training loop: full-batch Adam over MIL bags, deterministic on the CPU.

:func:`train_mil` is the seed of the project's trainer (the future one will run on a training
library with cohort datasets and logging); today it trains the demo's checkpoint
(``heatmaps.demo``) and the tests' small models. :func:`make_bags` makes training bags from the
instances of one slide with known instance labels (the synthetic slides of
:mod:`wsi_core.synthetic`).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..mil import MILModel
from .losses import bag_loss

__all__ = ["train_mil", "make_bags", "deterministic_torch"]

log = logging.getLogger(__name__)


@contextmanager
def deterministic_torch(threads: int | None = 1) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: unchanged) and deterministic
    algorithms, restoring both afterwards: the same inputs then give the same weights."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def train_mil(model: MILModel, bags: Sequence[Tensor | np.ndarray], labels: Sequence[int], *, steps: int,
              lr: float = 5e-4, weight_decay: float = 1e-4, seed: int = 0,
              aux_loss: Callable[[MILModel], Tensor] | None = None, threads: int | None = 1) -> MILModel:
    """Train ``model`` on labelled bags with full-batch Adam; returns it in eval mode.

    Args:
        model: a :class:`~models.mil.MILModel` (``forward(h) -> (logits (1, C), probs, attention)``).
        bags: the bags' features, each (n_i, D) float32 (numpy or torch; D = ``model.in_dim``).
        labels: one class index per bag, 0..C-1.
        steps: optimiser steps; each sees every bag once: loss = mean over bags of
            :func:`~models.train.losses.bag_loss` + ``aux_loss(model)`` (e.g. instance supervision,
            :func:`~models.train.losses.attention_supervision_loss`).
        lr, weight_decay: Adam's.
        seed: ``torch.manual_seed`` before the first step (dropout draws; seed the model's
            initialisation yourself before building it).
        threads: torch threads while training (1: bit-reproducible on one machine; None keeps
            the current setting); deterministic algorithms are on while training.

    Raises:
        ValueError: no bags, a bag/label count mismatch, a bag not (n, model.in_dim) with n >= 1,
            a label outside 0..C-1, or ``steps`` < 0.
    """
    hs = [torch.as_tensor(b, dtype=torch.float32) for b in bags]
    ys = [int(y) for y in labels]
    if not hs or len(hs) != len(ys) or steps < 0:
        raise ValueError(f"train_mil needs as many labels as bags (>= 1) and steps >= 0; got {len(hs)} bags, "
                         f"{len(ys)} labels, {steps} steps")
    bad = next((i for i, h in enumerate(hs) if h.dim() != 2 or len(h) == 0 or h.shape[1] != model.in_dim), None)
    if bad is not None:
        raise ValueError(f"bag {bad} has shape {tuple(hs[bad].shape)}; bags must be (n >= 1, {model.in_dim})")
    if any(not 0 <= y < model.n_classes for y in ys):
        raise ValueError(f"bag labels must be in 0..{model.n_classes - 1}, got {sorted(set(ys))}")
    targets = [torch.tensor([y]) for y in ys]
    with deterministic_torch(threads):
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        model.train()
        for step in range(steps):
            opt.zero_grad()
            loss = sum(bag_loss(model, model(h)[0], y) for h, y in zip(hs, targets)) / len(hs)
            if aux_loss is not None:
                loss = loss + aux_loss(model)
            loss.backward()
            opt.step()
            if (step == 0 or step + 1 == steps) and log.isEnabledFor(logging.DEBUG):
                log.debug("train_mil step %d/%d: loss %.4f", step + 1, steps, loss.item())
    return model.eval()


def make_bags(positive: np.ndarray, *, n_bags: int, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Training bags from one slide's instances with known labels (``positive`` (N,) bool).

    Returns ``[(indices (n,) int64 sorted, label)]``: the whole slide (label 1), then ``n_bags``
    pairs of a random subset holding 1..all positives and a quarter to all negatives (label 1)
    and a random subset of negatives only (label 0). Deterministic for a seeded ``rng``.

    Raises:
        ValueError: no positive or no negative instance.
    """
    positive = np.asarray(positive, bool)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"make_bags needs positive and negative instances, got {pos.size} and {neg.size}")
    bags = [(np.arange(positive.size), 1)]
    for _ in range(n_bags):
        k_pos = int(rng.integers(1, pos.size + 1))
        k_neg = int(rng.integers(max(1, neg.size // 4), neg.size + 1))
        with_lesion = np.concatenate([rng.choice(pos, k_pos, replace=False),
                                      rng.choice(neg, k_neg, replace=False)])
        bags += [(np.sort(with_lesion), 1), (np.sort(rng.choice(neg, k_neg, replace=False)), 0)]
    return bags
