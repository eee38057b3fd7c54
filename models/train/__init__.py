"""Training MIL models.

The trainer (``train-mil``, :mod:`.cli` -> :func:`.run.train_run`): the cohort (:mod:`.data`),
patient-level splits in CLAM's files (:mod:`.splits`), the config (:mod:`.config`), losses
(:mod:`.losses`), metrics (:mod:`.metrics`), the Lightning module and callbacks (:mod:`.module`),
TensorBoard attention images (:mod:`.attention_maps`). Importing this package loads only the
demo's full-batch loop (:mod:`.loop`) and the losses; Lightning is imported by the trainer's
modules themselves.
"""
from __future__ import annotations

from .loop import deterministic_torch, make_bags, train_mil
from .losses import attention_supervision_loss, bag_loss

__all__ = ["train_mil", "make_bags", "deterministic_torch", "bag_loss", "attention_supervision_loss"]
