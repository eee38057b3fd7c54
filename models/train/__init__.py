"""Training MIL models: the loop (:mod:`.loop`) and its losses (:mod:`.losses`).

The seed of the project's trainer (cohort datasets, splits and logging will join it here; the
future loop will run on a training library). Today it trains the demo's checkpoint.
"""
from __future__ import annotations

from .loop import deterministic_torch, make_bags, train_mil
from .losses import attention_supervision_loss, bag_loss

__all__ = ["train_mil", "make_bags", "deterministic_torch", "bag_loss", "attention_supervision_loss"]
