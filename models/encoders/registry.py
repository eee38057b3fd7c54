"""The patch-encoder registry (timm style): one :class:`EncoderInfo` per entry, everything else
derived from it.

An entry carries its facts - feature width, published input size, evaluation transform, weight
source (hub id, environment variables), label for messages, whether it is a CNN and whether it
has a fully-convolutional form - and its ``builder``. The registry answers from those facts
alone: :func:`list_encoders` (names in registration order), :func:`encoder_info`,
:func:`encoder_for_dim` (``feature_extractor: auto``), :func:`dim_label` (the published names
behind a feature width, for messages), :func:`fully_conv_encoders`. :func:`create_encoder`
builds one.

Importing this module (and the built-in entry modules, see :mod:`models.encoders`) does not
import torch: the config and the command line list the encoders without it. torch, timm and
torchvision are imported by the builders.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ContextManager

from wsi_core.errors import CheckpointError, ConfigError

from .precision import autocast_context, normalise_precision

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import Tensor, nn

__all__ = ["Encoder", "EncoderInfo", "TransformSpec", "Builder", "register_encoder", "create_encoder",
           "encoder_info", "list_encoders", "encoder_for_dim", "encoders_by_dim", "dim_label",
           "fully_conv_encoders", "resolve_target_size", "IMAGENET_MEAN", "IMAGENET_STD",
           "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TransformSpec:
    """An entry's published evaluation transform (built by :func:`models.encoders.build_transform`):

    ``Resize(size, interpolation)`` of the shorter side (skipped for size <= 0), then
    ``CenterCrop(size)`` when ``center_crop``, ``ToTensor`` (uint8 -> [0, 1]) and
    ``Normalize(mean, std)``: PIL RGB image -> (3, size, size) float32.
    """

    interpolation: str = "bilinear"
    center_crop: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class Encoder:
    """A built patch encoder.

    name: registry name; model: eval-mode module mapping (B, 3, H, W) float32 -> (B, dim)
    (run it under :meth:`autocast`; cast the output with ``.float()``);
    transform: PIL RGB image -> (3, H, W) float32 tensor (H = W = ``input_size`` px when set);
    dim: feature width; weights_source: file path or hub id the weights came from (for logs);
    hub_id: the entry's hub id (None for ad-hoc encoders); input_size: px side the transform
    produces (None: patch size kept); is_cnn: a convolutional network (run it channels-last);
    precision: 'fp32' | 'bf16' | 'fp16' (recordable string).
    """

    name: str
    model: nn.Module
    transform: Callable[[Image.Image], Tensor]
    dim: int
    weights_source: str
    hub_id: str | None = None
    input_size: int | None = None
    is_cnn: bool = False
    precision: str = "fp32"

    def autocast(self, device: str | torch.device) -> ContextManager:
        """Context to run :attr:`model` under on ``device`` (see :func:`autocast_context`)."""
        return autocast_context(device, self.precision)

    @property
    def memory_format(self) -> torch.memory_format:
        """``torch.channels_last`` for CNNs (about 1.5x faster on CPU), else contiguous."""
        import torch

        return torch.channels_last if self.is_cnn else torch.contiguous_format


#: ``builder(info, *, target_img_size, weights_path) -> Encoder`` (eval mode, CPU, float32)
Builder = Callable[..., Encoder]


@dataclass(frozen=True)
class EncoderInfo:
    """A registry entry: what is known about an encoder without building it, and its builder.

    name: registry name (``encoder_arguments.model_name``); dim: feature width;
    input_size: published px side; hub_id: where the weights come from by default;
    env_vars: variables naming a local weights file, first found wins; is_cnn: convolutional
    (run channels-last); label: published model name for messages ("UNI2-h");
    patch_size: ViT token side in px (target sizes must be multiples of it), None for CNNs;
    transform: the published evaluation transform; fully_conv: has a fully-convolutional form
    (:mod:`models.fully_conv`); activation_bytes_per_px: peak CPU memory per input pixel of one
    patch in a batch (fp32, with the heap-keeping allocator of :mod:`models.runtime`), which sizes
    the encoder's batches to a memory budget. Measured for resnet50_trunc: a whole reference run
    peaks 40 MB higher per extra 224-px patch in the batch (1,531 MiB at 16, 2,171 MiB at 32) =
    800 B/px (190 B/px with glibc's default allocator). For the ViTs it is derived, not measured:
    ViT-L/16 takes 406 B/px with the default allocator (ViT-H/14 470), times the 4.2x the heap
    keeps for resnet50_trunc = 1700; builder: see :data:`Builder` (None: facts only).
    """

    name: str
    dim: int
    input_size: int
    hub_id: str
    env_vars: tuple[str, ...]
    is_cnn: bool = False
    label: str = ""
    patch_size: int | None = None
    transform: TransformSpec = TransformSpec()
    fully_conv: bool = False
    activation_bytes_per_px: int = 1700
    builder: Builder | None = field(default=None, compare=False, repr=False)


_REGISTRY: dict[str, EncoderInfo] = {}


def register_encoder(info: EncoderInfo) -> EncoderInfo:
    """Add ``info`` to the registry (a later entry of the same name replaces it) and return it."""
    if info.name in _REGISTRY:
        log.debug("encoder %s registered again; the new entry replaces the old one", info.name)
    _REGISTRY[info.name] = info
    return info


def list_encoders() -> list[str]:
    """Registered encoder names in registration order (the built-ins: resnet50_trunc, uni_v1,
    uni_v2, conch_v1, ctranspath, virchow2)."""
    return list(_REGISTRY)


def encoder_info(name: str) -> EncoderInfo:
    """The registry entry ``name``.

    Raises:
        CheckpointError: unknown name; lists the registered ones.
    """
    info = _REGISTRY.get(name)
    if info is None:
        raise CheckpointError(
            f"unknown encoder_arguments.model_name '{name}'; available: {', '.join(_REGISTRY)}"
        )
    return info


def create_encoder(name: str = "resnet50_trunc", *, target_img_size: int | None = None,
                   weights_path: str | os.PathLike[str] | None = None,
                   precision: str = "fp32") -> Encoder:
    """Build the registered encoder ``name`` in eval mode on the CPU (float32 weights).

    ``target_img_size``: px side the patch is resized to; None = the model's published size
    (224, or 448 for conch_v1); ``<= 0`` keeps the patch size (resnet50_trunc only).
    ``weights_path``: local weights (file or folder); else the entry's env var, else its hub id.
    ``precision``: 'fp32' | 'bf16' | 'fp16', stored on the encoder (see :meth:`Encoder.autocast`).

    Raises:
        CheckpointError: unknown ``name`` (lists the registered ones), unreadable or
            mismatching weights, hub weights that cannot be fetched, a missing package.
        ConfigError: an invalid ``precision`` or a ``target_img_size`` the model cannot take.
    """
    prec = normalise_precision(precision)
    info = encoder_info(name)
    if info.builder is None:
        raise CheckpointError(f"encoder '{name}' is registered without a builder")
    enc = info.builder(info, target_img_size=target_img_size, weights_path=weights_path)
    enc.precision = prec
    return enc


def encoders_by_dim() -> dict[int, list[str]]:
    """Feature width -> registered names giving it, both in registration order
    (``{1024: ['resnet50_trunc', 'uni_v1'], 1536: ['uni_v2'], ...}``)."""
    by_dim: dict[int, list[str]] = {}
    for name, info in _REGISTRY.items():
        by_dim.setdefault(info.dim, []).append(name)
    return by_dim


def encoder_for_dim(dim: int, *, prefer: str | None = None) -> str:
    """Registered encoder giving ``dim``-d features (for ``feature_extractor: auto``).

    The first registered entry of that width wins (1024 -> resnet50_trunc, 1536 -> uni_v2,
    768 -> ctranspath, 512 -> conch_v1, 2560 -> virchow2); ``prefer`` breaks the tie when it
    is one of the candidates (``prefer='uni_v1'`` for 1024) and is ignored otherwise.

    Raises:
        CheckpointError: no registered encoder gives ``dim``; lists widths and candidates.
    """
    by_dim = encoders_by_dim()
    names = by_dim.get(int(dim), [])
    if prefer in names:
        return prefer
    if names:
        return names[0]
    known = ", ".join(f"{d}: {'/'.join(ns)}" for d, ns in by_dim.items())
    raise CheckpointError(
        f"checkpoint expects {dim}-d features; no registered encoder gives that ({known}); "
        "give pre-extracted features of that width (features_path) or use a checkpoint "
        "trained on one of these encoders"
    )


def dim_label(dim: int) -> str | None:
    """Published names of the encoders giving ``dim``-d features, for messages
    ("UNI2-h" for 1536, "ResNet-50 or UNI" for 1024), or None when none does."""
    labels = [_REGISTRY[n].label or n for n in encoders_by_dim().get(int(dim), [])]
    return " or ".join(dict.fromkeys(labels)) or None


def fully_conv_encoders() -> list[str]:
    """Registered names with a fully-convolutional form (``EncoderInfo.fully_conv``)."""
    return [n for n, info in _REGISTRY.items() if info.fully_conv]


def resolve_target_size(info: EncoderInfo, target_img_size: int | None) -> int:
    """px side for the transform: None -> the published size; ViTs need a positive multiple
    of their patch size.

    Raises:
        ConfigError: naming ``encoder_arguments.target_img_size`` and the nearest valid sizes.
    """
    if target_img_size is None:
        return info.input_size
    size = int(target_img_size)
    p = info.patch_size
    if p and (size <= 0 or size % p):
        lo, hi = max(p, p * (size // p)), p * (size // p + 1)
        raise ConfigError(
            f"encoder_arguments.target_img_size {target_img_size} does not fit {info.name} "
            f"({p}-px patches); use a multiple of {p} such as {lo} or {hi}, or leave it unset "
            f"for the published {info.input_size}"
        )
    return size

