"""``resnet50_trunc``: CLAM's default encoder (Lu et al., Nat Biomed Eng 2021), 1024-d.

An ImageNet ResNet-50 (timm ``resnet50``, weights ``timm/resnet50.tv_in1k``) run through
``layer3`` only, then global average pooling (:class:`~models.encoders.nets.ResNet50Trunc`).
Images go through ``Resize(target_img_size)`` (shorter side, bilinear, when > 0), ``ToTensor``
and ImageNet ``Normalize`` (CLAM's transform). A full or truncated torchvision/timm ResNet-50
state dict loads (``layer4``/``fc`` are ignored). Fully convolutional: the trunk's layer3 map
can be pooled per patch window (:mod:`models.fully_conv`).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from wsi_core.errors import CheckpointError

from .registry import Encoder, EncoderInfo, TransformSpec, register_encoder
from .transforms import build_transform
from .weights import read_weights, resolve_weights_path, strip_prefixes

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["RESNET50_TRUNC", "RESNET50_TRUNC_ENV", "RESNET50_TRUNC_HUB_ID", "trunk_state_dict",
           "load_trunk_weights", "build_resnet50_trunc"]

RESNET50_TRUNC_ENV = "RESNET50_TRUNC_CKPT_PATH"
RESNET50_TRUNC_HUB_ID = "resnet50.tv_in1k"
_IGNORED_PREFIXES = ("layer4.", "fc.")


def trunk_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip 'model.'/'module.' prefixes and drop layer4/fc from a ResNet-50 state dict."""
    return {k: v for k, v in strip_prefixes(sd).items() if not k.startswith(_IGNORED_PREFIXES)}


def load_trunk_weights(model: nn.Module, sd: dict[str, Tensor], *, source: str) -> None:
    """Load a (full or truncated) ResNet-50 state dict into a ``ResNet50Trunc``.

    Raises:
        CheckpointError: trunk keys missing (names ``source`` and the first few keys) or
            tensor shapes that do not fit.
    """
    sd = trunk_state_dict(sd)
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


def build_resnet50_trunc(info: EncoderInfo, *, target_img_size: int | None = None,
                         weights_path: str | os.PathLike[str] | None = None) -> Encoder:
    """CLAM's resnet50_trunc (1024-d); weights from the argument, the env var, or the hub.

    ``target_img_size``: None -> 224; ``<= 0`` keeps the patch size (CLAM's -1).

    Raises:
        CheckpointError: missing/unreadable/mismatching weights, or the hub cannot be reached.
    """
    from .nets import ResNet50Trunc

    size = info.input_size if target_img_size is None else int(target_img_size)
    model = ResNet50Trunc()
    local = resolve_weights_path(weights_path, info.env_vars)
    if local:
        source = str(local[0])
        load_trunk_weights(model, read_weights(local[0], env=info.env_vars[0]), source=source)
    else:
        source = info.hub_id
        load_trunk_weights(model, _hub_trunk_state_dict(), source=source)
    return Encoder(name=info.name, model=model.eval(), transform=build_transform(info.transform, size),
                   dim=info.dim, weights_source=source, hub_id=info.hub_id,
                   input_size=size if size > 0 else None, is_cnn=info.is_cnn)


RESNET50_TRUNC = register_encoder(EncoderInfo(
    name="resnet50_trunc", dim=1024, input_size=224, hub_id=f"timm/{RESNET50_TRUNC_HUB_ID}",
    env_vars=(RESNET50_TRUNC_ENV,), is_cnn=True, label="ResNet-50", transform=TransformSpec(),
    fully_conv=True, activation_bytes_per_px=800, builder=build_resnet50_trunc))
