"""MIL models, checkpoint loading, patch encoders and batched feature extraction (torch, timm).

Importing this package registers the built-in MIL architectures (``clam_sb``, ``clam_mb``,
``abmil``) and encoders (``resnet50_trunc``).
"""
from __future__ import annotations

from . import abmil, clam, dsmil, transmil  # noqa: F401  (register the architectures)
from .checkpoints import check_feature_dim, closest_model_type, load_mil_checkpoint
from .encoders import (
    ENCODER_INFO,
    ENCODERS,
    PRECISIONS,
    Encoder,
    EncoderInfo,
    autocast_context,
    create_encoder,
    default_precision,
    encoder_for_dim,
    normalise_precision,
    register_encoder,
)
from .extract import extract_features, extract_features_dense, reuse_map
from .fully_conv import extract_features_fully_conv, supports_fully_conv
from .runtime import tune_cpu_allocator
from .mil import (
    MIL_MODELS,
    BagPrediction,
    MILModel,
    attention_for_class,
    create_mil_model,
    instance_scores_for,
    predict_bag,
    register_mil_model,
    registered_names,
)

__all__ = [
    "BagPrediction",
    "MILModel",
    "MIL_MODELS",
    "register_mil_model",
    "create_mil_model",
    "predict_bag",
    "attention_for_class",
    "instance_scores_for",
    "registered_names",
    "closest_model_type",
    "load_mil_checkpoint",
    "check_feature_dim",
    "Encoder",
    "ENCODERS",
    "register_encoder",
    "create_encoder",
    "EncoderInfo",
    "ENCODER_INFO",
    "encoder_for_dim",
    "default_precision",
    "normalise_precision",
    "autocast_context",
    "PRECISIONS",
    "extract_features",
    "reuse_map",
    "extract_features_dense",
    "extract_features_fully_conv",
    "supports_fully_conv",
    "tune_cpu_allocator",
]
