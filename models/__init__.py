"""MIL models, checkpoint loading, patch encoders and batched feature extraction (torch, timm).

Public names are loaded on first use (PEP 562), so ``import models`` and the registries' lists
(:func:`list_encoders`, and the encoder facts behind it) stay torch-free: the command line and
the config derive their choices and help from them without loading torch. The built-in MIL
architectures (``abmil``, ``clam_sb``, ``clam_mb``, ``dsmil``, ``transmil``) register on first
use of the MIL registry (:mod:`models.mil`); the encoders (``resnet50_trunc``, ``uni_v1``,
``uni_v2``, ``conch_v1``, ``ctranspath``, ``virchow2``) when :mod:`models.encoders` is imported.

Packages: :mod:`models.encoders` (the encoder registry), :mod:`models.encode` (the one encode
loop), :mod:`models.extract` / :mod:`models.fully_conv` (its slide front ends), :mod:`models.mil`
and the architectures, :mod:`models.checkpoints`, :mod:`models.train` (training).
"""
from __future__ import annotations

# ruff: noqa: F401  (the TYPE_CHECKING imports below are re-exports)

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> submodule defining it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["BagPrediction", "MILModel", "MIL_MODELS", "register_mil_model", "create_mil_model",
                     "list_mil_models", "predict_bag", "attention_for_class", "instance_scores_for"], "mil"),
    **dict.fromkeys(["closest_model_type", "load_mil_checkpoint", "check_feature_dim"], "checkpoints"),
    **dict.fromkeys(["Encoder", "EncoderInfo", "register_encoder", "create_encoder", "encoder_info",
                     "list_encoders", "encoder_for_dim", "dim_label", "fully_conv_encoders",
                     "default_precision", "normalise_precision", "resolve_precision", "has_native_bf16",
                     "autocast_context", "PRECISIONS"],
                    "encoders"),
    **dict.fromkeys(["encode", "encode_image_patches"], "encode"),
    **dict.fromkeys(["extract_features", "extract_features_dense", "reuse_map"], "extract"),
    **dict.fromkeys(["extract_features_fully_conv", "supports_fully_conv"], "fully_conv"),
    "tune_cpu_allocator": "runtime",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # what static analysis sees; at run time __getattr__ imports on first use
    from .checkpoints import check_feature_dim, closest_model_type, load_mil_checkpoint
    from .encode import encode, encode_image_patches
    from .encoders import (PRECISIONS, Encoder, EncoderInfo, autocast_context, create_encoder,
                           default_precision, dim_label, encoder_for_dim, encoder_info,
                           fully_conv_encoders, has_native_bf16, list_encoders, normalise_precision,
                           register_encoder, resolve_precision)
    from .extract import extract_features, extract_features_dense, reuse_map
    from .fully_conv import extract_features_fully_conv, supports_fully_conv
    from .mil import (MIL_MODELS, BagPrediction, MILModel, attention_for_class, create_mil_model,
                      instance_scores_for, list_mil_models, predict_bag, register_mil_model)
    from .runtime import tune_cpu_allocator


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
