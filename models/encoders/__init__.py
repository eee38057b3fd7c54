"""Patch encoders (image -> feature vector) behind one registry (:mod:`.registry`).

``create_encoder(name, *, target_img_size=None, weights_path=None, precision="fp32")`` builds a
registered encoder in eval mode on the CPU. Each entry (:class:`EncoderInfo`) carries its
published architecture's facts: feature width, input size, evaluation transform, weight source
(hub id, environment variables), label, CNN or not, fully-convolutional form or not:

============== ======= ===== ======================================================== ======
name           dim     px    weights hub id                                           CNN
============== ======= ===== ======================================================== ======
resnet50_trunc 1024    224   ``timm/resnet50.tv_in1k`` (CLAM's default encoder)       yes
uni_v1         1024    224   ``hf-hub:MahmoodLab/UNI``                                no
uni_v2         1536    224   ``hf-hub:MahmoodLab/UNI2-h``                             no
conch_v1       512     448   ``hf_hub:MahmoodLab/conch`` (needs the ``conch`` package) no
ctranspath     768     224   ``MahmoodLab/hest-bench`` dataset, TRIDENT's copy        no
virchow2       2560    224   ``hf-hub:paige-ai/Virchow2``                             no
============== ======= ===== ======================================================== ======

Modules: :mod:`.registry` (Encoder, EncoderInfo, register/create/list), :mod:`.precision`,
:mod:`.weights` (local files, strict loading, hub errors), :mod:`.transforms`, :mod:`.nets`
(the torch modules), and one module per family registering its entries:
:mod:`.resnet50_trunc`, :mod:`.vit` (UNI, UNI2-h, CONCH, CTransPath, Virchow2). Adding an encoder
is one such module (imported below, in registration order) and its test.

Importing this package does not import torch; the builders do.
"""
from __future__ import annotations

from .precision import (PRECISIONS, autocast_context, default_precision, has_native_bf16, normalise_precision,
                        resolve_precision)
from .registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    EncoderInfo,
    TransformSpec,
    create_encoder,
    dim_label,
    encoder_for_dim,
    encoder_info,
    encoders_by_dim,
    fully_conv_encoders,
    list_encoders,
    register_encoder,
    resolve_target_size,
)
from .transforms import DeviceTransform, build_transform, device_transform, eval_transform

# the built-in entries register themselves on import, in this order
from . import resnet50_trunc, vit  # noqa: E402,F401  isort: skip

__all__ = [
    "Encoder", "EncoderInfo", "TransformSpec", "register_encoder", "create_encoder", "encoder_info",
    "list_encoders", "encoder_for_dim", "encoders_by_dim", "dim_label", "fully_conv_encoders",
    "resolve_target_size", "build_transform", "eval_transform", "DeviceTransform", "device_transform",
    "IMAGENET_MEAN", "IMAGENET_STD",
    "PRECISIONS", "normalise_precision", "default_precision", "resolve_precision", "has_native_bf16",
    "autocast_context",
]
