"""Patch encoders (image -> feature vector) behind a small registry.

``create_encoder(name, *, target_img_size=None, weights_path=None, precision="fp32")`` builds a
registered encoder in eval mode on the CPU. Each entry carries its published architecture,
evaluation transform, feature width and weight source (:class:`EncoderInfo`):

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

The ViT/Swin entries live in :mod:`models.encoder_zoo`; ``resnet50_trunc`` is defined here:
an ImageNet ResNet-50 (timm ``resnet50``) run through ``layer3`` only, then global average
pooling -> 1024-d; images go through ``Resize(target_img_size)`` (shorter side, when > 0),
``ToTensor`` and ImageNet ``Normalize`` (CLAM's transform).

Weight source, first found wins:

1. the ``weights_path`` argument (config ``encoder_arguments.weights_path``);
2. the environment variable ``{NAME}_CKPT_PATH`` (upper-cased registry name), then the names
   CLAM users already set: ``UNI_CKPT_PATH`` (uni_v1), ``UNI2_CKPT_PATH`` (uni_v2),
   ``CONCH_CKPT_PATH`` (conch_v1);
3. the hub id (needs network access or a Hugging Face cache); when that fails a
   :class:`CheckpointError` names the hub id, ``encoder_arguments.weights_path`` and the variable.

A local file is ``.safetensors`` or a torch ``.pth/.pt/.bin`` state dict (optionally under a
``state_dict``/``model``/``model_state_dict`` key; leading ``module.``/``model.`` prefixes are
stripped); a folder is searched for ``model.safetensors`` / ``pytorch_model.bin``
(:mod:`models.encoder_weights`). Foundation models load strictly: a missing, unexpected or
mis-shaped tensor raises a :class:`CheckpointError` naming the file and a few keys.

Precision: ``precision`` is ``fp32``, ``bf16`` or ``fp16``; the weights stay float32 and
:meth:`Encoder.autocast` gives the ``torch.autocast`` context to run the model under
(:func:`default_precision`: fp32 on the CPU, bf16 on CUDA).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import torch
from PIL import Image
from torch import Tensor, nn

from wsi_core.errors import CheckpointError, ConfigError

from .encoder_weights import hub_error as _hub_error
from .encoder_weights import load_strict, read_weights, strip_prefixes
from .encoder_weights import resolve_weights_path as _resolve_weights_path

__all__ = ["Encoder", "EncoderInfo", "ENCODERS", "ENCODER_INFO", "register_encoder", "create_encoder",
           "encoder_for_dim", "default_precision", "normalise_precision", "autocast_context",
           "PRECISIONS", "ResNet50Trunc", "IMAGENET_MEAN", "IMAGENET_STD", "RESNET50_TRUNC_ENV",
           "RESNET50_TRUNC_HUB_ID", "eval_transform", "read_weights", "resolve_weights_path",
           "resolve_target_size", "strip_prefixes", "load_strict", "hub_error"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET50_TRUNC_ENV = "RESNET50_TRUNC_CKPT_PATH"
RESNET50_TRUNC_HUB_ID = "resnet50.tv_in1k"
_IGNORED_PREFIXES = ("layer4.", "fc.")

#: precision name -> autocast dtype (None: plain float32, no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def normalise_precision(precision: str) -> str:
    """Canonical precision name ('fp32' | 'bf16' | 'fp16'), recordable in H5 attrs.

    Accepts the aliases float32 / bfloat16 / float16 / half (any case).

    Raises:
        ConfigError: any other value, naming ``encoder_arguments.precision`` and the valid ones.
    """
    p = str(precision).strip().lower()
    p = _PRECISION_ALIASES.get(p, p)
    if p not in PRECISIONS:
        raise ConfigError(f"encoder_arguments.precision '{precision}' is not supported; "
                          f"use one of {', '.join(PRECISIONS)}")
    return p


def default_precision(device: str | torch.device) -> str:
    """'bf16' on a CUDA device, else 'fp32' (CPU bf16 is faster only with AMX/AVX512-BF16)."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def autocast_context(device: str | torch.device, precision: str | None) -> ContextManager:
    """``torch.autocast(device_type, dtype)`` for bf16/fp16, ``contextlib.nullcontext()`` for
    fp32 or None. Raises ConfigError for an unknown precision (see :func:`normalise_precision`)."""
    dtype = PRECISIONS[normalise_precision("fp32" if precision is None else precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@dataclass
class Encoder:
    """A patch encoder.

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
        return torch.channels_last if self.is_cnn else torch.contiguous_format


@dataclass(frozen=True)
class EncoderInfo:
    """What the registry knows about an entry without building it.

    dim: feature width; input_size: published px side; hub_id: where weights come from;
    env_vars: variables naming a local weights file, first found wins; is_cnn: convolutional;
    label: published model name for messages ("UNI2-h"); patch_size: ViT token side in px
    (target sizes must be multiples of it), None for CNNs.
    """

    name: str
    dim: int
    input_size: int
    hub_id: str
    env_vars: tuple[str, ...]
    is_cnn: bool = False
    label: str = ""
    patch_size: int | None = None


ENCODERS: dict[str, Callable[..., Encoder]] = {}
ENCODER_INFO: dict[str, EncoderInfo] = {}


def register_encoder(name: str, info: EncoderInfo | None = None
                     ) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Decorator: register a factory ``f(*, target_img_size, weights_path) -> Encoder``.

    ``info`` (dim, hub id, ...) makes the entry known to :func:`encoder_for_dim`.
    """

    def deco(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        ENCODERS[name] = factory
        if info is not None:
            ENCODER_INFO[name] = info
        return factory

    return deco


def create_encoder(name: str = "resnet50_trunc", *, target_img_size: int | None = None,
                   weights_path: str | os.PathLike[str] | None = None,
                   precision: str = "fp32") -> Encoder:
    """Build the registered encoder ``name`` in eval mode on the CPU (float32 weights).

    ``target_img_size``: px side the patch is resized to; None = the model's published size
    (224, or 448 for conch_v1); ``<= 0`` keeps the patch size (resnet50_trunc only).
    ``weights_path``: local weights (file or folder); else the env var, else the hub.
    ``precision``: 'fp32' | 'bf16' | 'fp16', stored on the encoder (see :meth:`Encoder.autocast`).

    Raises:
        CheckpointError: unknown ``name`` (lists the registered ones), unreadable or
            mismatching weights, hub weights that cannot be fetched, a missing package.
        ConfigError: an invalid ``precision`` or a ``target_img_size`` the model cannot take.
    """
    prec = normalise_precision(precision)
    factory = ENCODERS.get(name)
    if factory is None:
        raise CheckpointError(
            f"unknown encoder_arguments.model_name '{name}'; available: {', '.join(ENCODERS)}"
        )
    enc = factory(target_img_size=target_img_size, weights_path=weights_path)
    enc.precision = prec
    return enc


def encoder_for_dim(dim: int, *, prefer: str | None = None) -> str:
    """Registered encoder giving ``dim``-d features (for ``feature_extractor: auto``).

    The first registered entry of that width wins (1024 -> resnet50_trunc, 1536 -> uni_v2,
    768 -> ctranspath, 512 -> conch_v1, 2560 -> virchow2); ``prefer`` breaks the tie when it
    is one of the candidates (``prefer='uni_v1'`` for 1024) and is ignored otherwise.

    Raises:
        CheckpointError: no registered encoder gives ``dim``; lists widths and candidates.
    """
    names = [n for n, i in ENCODER_INFO.items() if i.dim == int(dim)]
    if prefer in names:
        return prefer
    if names:
        return names[0]
    by_dim: dict[int, list[str]] = {}
    for n, i in ENCODER_INFO.items():
        by_dim.setdefault(i.dim, []).append(n)
    known = ", ".join(f"{d}: {'/'.join(ns)}" for d, ns in by_dim.items())
    raise CheckpointError(
        f"checkpoint expects {dim}-d features; no registered encoder gives that ({known}); "
        "give pre-extracted features of that width (features_path) or use a checkpoint "
        "trained on one of these encoders"
    )


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


def eval_transform(target_img_size: int) -> Callable[[Image.Image], Tensor]:
    """CLAM's eval transform: [Resize(size) if size > 0], ToTensor, ImageNet Normalize."""
    from torchvision import transforms  # imported lazily: heavy, and only needed to encode
    steps: list[Callable] = [transforms.Resize(target_img_size)] if target_img_size > 0 else []
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return transforms.Compose(steps)


def resolve_weights_path(info: EncoderInfo, weights_path: str | os.PathLike[str] | None
                         ) -> tuple[Path, str] | None:
    """(local file, 'encoder_arguments.weights_path' | '$VAR') for entry ``info``, or None (hub)."""
    return _resolve_weights_path(weights_path, info.env_vars)


def hub_error(info: EncoderInfo, exc: BaseException, *, what: str | None = None) -> CheckpointError:
    """CheckpointError naming the hub id (or ``what``), encoder_arguments.weights_path, env vars."""
    return _hub_error(exc, what=what or info.hub_id, env_vars=info.env_vars, label=info.label or info.name)


_read_weights = read_weights  # former private name


# ---------------------------------------------------------------------------------------------
# resnet50_trunc (CLAM's default)
# ---------------------------------------------------------------------------------------------

class ResNet50Trunc(nn.Module):
    """ResNet-50 stem + layer1..layer3 + global average pooling: (B, 3, H, W) -> (B, 1024).

    Submodule names equal torchvision/timm ResNet names, so their state dicts load directly.
    """

    dim = 1024

    def __init__(self) -> None:
        super().__init__()
        import timm  # imported lazily: heavy, and only needed to encode

        net = timm.create_model("resnet50", pretrained=False, num_classes=0)
        self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.act1, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.pool(x), 1)


def _trunk_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip 'model.'/'module.' prefixes and drop layer4/fc from a ResNet-50 state dict."""
    return {k: v for k, v in strip_prefixes(sd).items() if not k.startswith(_IGNORED_PREFIXES)}


def load_trunk_weights(model: ResNet50Trunc, sd: dict[str, Tensor], *, source: str) -> None:
    """Load a (full or truncated) ResNet-50 state dict into ``model``.

    Raises:
        CheckpointError: trunk keys missing (names ``source`` and the first few keys) or
            tensor shapes that do not fit.
    """
    sd = _trunk_state_dict(sd)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(
            f"encoder weights {source} lack {len(missing)} ResNet-50 trunk keys (e.g. "
            f"{', '.join(missing[:3])}); give a torchvision/timm ResNet-50 state dict"
        )
    try:
        model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"encoder weights {source} do not fit ResNet-50: "
                              f"{' '.join(str(exc).split())[:200]}") from exc


def _hub_trunk_state_dict() -> dict[str, Tensor]:
    import timm

    try:
        net = timm.create_model(RESNET50_TRUNC_HUB_ID, pretrained=True)
    except Exception as exc:  # network, missing cache, HF offline mode ...
        raise CheckpointError(
            f"cannot fetch encoder weights timm/{RESNET50_TRUNC_HUB_ID} from the Hugging Face hub "
            f"({type(exc).__name__}); set encoder_arguments.weights_path or ${RESNET50_TRUNC_ENV} "
            "to a local ResNet-50 .safetensors/.pth file"
        ) from exc
    return net.state_dict()


RESNET50_TRUNC_INFO = EncoderInfo(name="resnet50_trunc", dim=1024, input_size=224,
                                  hub_id=f"timm/{RESNET50_TRUNC_HUB_ID}", env_vars=(RESNET50_TRUNC_ENV,),
                                  is_cnn=True, label="ResNet-50")


@register_encoder("resnet50_trunc", RESNET50_TRUNC_INFO)
def resnet50_trunc(*, target_img_size: int | None = None,
                   weights_path: str | os.PathLike[str] | None = None) -> Encoder:
    """CLAM's resnet50_trunc (1024-d); weights from the argument, the env var, or the hub.

    ``target_img_size``: None -> 224; ``<= 0`` keeps the patch size (CLAM's -1).
    """
    size = 224 if target_img_size is None else int(target_img_size)
    model = ResNet50Trunc()
    local = resolve_weights_path(RESNET50_TRUNC_INFO, weights_path)
    if local:
        source = str(local[0])
        load_trunk_weights(model, read_weights(local[0], env=RESNET50_TRUNC_ENV), source=source)
    else:
        source = RESNET50_TRUNC_INFO.hub_id
        load_trunk_weights(model, _hub_trunk_state_dict(), source=source)
    return Encoder(name="resnet50_trunc", model=model.eval(), transform=eval_transform(size),
                   dim=ResNet50Trunc.dim, weights_source=source, hub_id=RESNET50_TRUNC_INFO.hub_id,
                   input_size=size if size > 0 else None, is_cnn=True)


from . import encoder_zoo as _encoder_zoo  # noqa: E402,F401  (registers the ViT/Swin entries)
