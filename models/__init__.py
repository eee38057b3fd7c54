"""MIL models, checkpoint loading, patch encoders and batched feature extraction (torch, timm).

Importing this package registers the built-in MIL architectures (``clam_sb``, ``clam_mb``,
``abmil``) and encoders (``resnet50_trunc``).
"""
from __future__ import annotations

from . import abmil, clam  # noqa: F401  (register the architectures)
from .checkpoints import check_feature_dim, load_mil_checkpoint
from .encoders import ENCODERS, Encoder, create_encoder, register_encoder
from .extract import extract_features, reuse_map
from .runtime import tune_cpu_allocator
from .mil import (
    MIL_MODELS,
    BagPrediction,
    MILModel,
    attention_for_class,
    create_mil_model,
    predict_bag,
    register_mil_model,
)

__all__ = [
    "BagPrediction",
    "MILModel",
    "MIL_MODELS",
    "register_mil_model",
    "create_mil_model",
    "predict_bag",
    "attention_for_class",
    "load_mil_checkpoint",
    "check_feature_dim",
    "Encoder",
    "ENCODERS",
    "register_encoder",
    "create_encoder",
    "extract_features",
    "reuse_map",
    "tune_cpu_allocator",
]
