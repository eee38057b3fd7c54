"""Patch encoders (image -> feature vector) behind a small registry.

``create_encoder("resnet50_trunc")`` reproduces CLAM's default encoder: an ImageNet ResNet-50
(timm ``resnet50``) run through ``layer3`` only (``layer4`` and ``fc`` dropped), then global
average pooling -> 1024-d features; images go through torchvision ``Resize(target_img_size)``
(shorter side, when > 0), ``ToTensor`` and ImageNet ``Normalize``.

Weight source of resnet50_trunc, first found wins:
1. the ``weights_path`` argument (config ``encoder_arguments.weights_path``);
2. the environment variable ``RESNET50_TRUNC_CKPT_PATH``;
3. the timm hub weights ``timm/resnet50.tv_in1k`` (needs network access or a Hugging Face cache).
A local file is ``.safetensors`` or a torch ``.pth/.pt/.bin`` state dict of a full torchvision /
timm ResNet-50 (``layer4.*`` and ``fc.*`` are ignored) or of the truncated trunk; leading
``model.`` / ``module.`` prefixes are stripped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch import Tensor, nn

from wsi_core.errors import CheckpointError

__all__ = ["Encoder", "ENCODERS", "register_encoder", "create_encoder", "ResNet50Trunc",
           "IMAGENET_MEAN", "IMAGENET_STD", "RESNET50_TRUNC_ENV", "RESNET50_TRUNC_HUB_ID"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET50_TRUNC_ENV = "RESNET50_TRUNC_CKPT_PATH"
RESNET50_TRUNC_HUB_ID = "resnet50.tv_in1k"
_IGNORED_PREFIXES = ("layer4.", "fc.")


@dataclass
class Encoder:
    """A patch encoder.

    name: registry name; model: eval-mode module mapping (B, 3, H, W) float32 -> (B, dim);
    transform: PIL RGB image -> (3, H, W) float32 tensor; dim: feature width;
    weights_source: where the weights came from (a file path or a hub id), for logs.
    """

    name: str
    model: nn.Module
    transform: Callable[[Image.Image], Tensor]
    dim: int
    weights_source: str


ENCODERS: dict[str, Callable[..., Encoder]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Decorator: register a factory ``f(*, target_img_size, weights_path) -> Encoder``."""

    def deco(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        ENCODERS[name] = factory
        return factory

    return deco


def create_encoder(name: str = "resnet50_trunc", *, target_img_size: int = 224,
                   weights_path: str | os.PathLike[str] | None = None) -> Encoder:
    """Build the registered encoder ``name`` in eval mode on the CPU.

    ``target_img_size``: px side the patch is resized to (shorter side; <= 0 keeps the size).

    Raises:
        CheckpointError: unknown ``name`` (lists the registered ones), unreadable or
            incomplete weights, or hub weights that cannot be fetched.
    """
    factory = ENCODERS.get(name)
    if factory is None:
        raise CheckpointError(
            f"unknown encoder_arguments.model_name '{name}'; available: {', '.join(sorted(ENCODERS))}"
        )
    return factory(target_img_size=target_img_size, weights_path=weights_path)


def eval_transform(target_img_size: int) -> Callable[[Image.Image], Tensor]:
    """CLAM's eval transform: [Resize(size) if size > 0], ToTensor, ImageNet Normalize."""
    from torchvision import transforms  # imported lazily: heavy, and only needed to encode
    steps: list[Callable] = [transforms.Resize(target_img_size)] if target_img_size > 0 else []
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return transforms.Compose(steps)


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


def _read_weights(path: Path) -> dict[str, Tensor]:
    """State dict from .safetensors or a torch file; CheckpointError when unreadable."""
    if not path.is_file():
        raise CheckpointError(
            f"encoder weights not found: {path}; set encoder_arguments.weights_path or "
            f"${RESNET50_TRUNC_ENV} to an existing file"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        elif path.suffix in (".pth", ".pt", ".bin"):
            sd = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(
                f"encoder weights {path}: unsupported file type '{path.suffix}'; "
                "use .safetensors, .pth, .pt or .bin"
            )
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors/torch raise many types for a corrupt file
        raise CheckpointError(f"cannot read encoder weights {path}: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointError(f"encoder weights {path} hold no state dict")
    return sd


def _trunk_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip 'model.'/'module.' prefixes and drop layer4/fc from a ResNet-50 state dict."""
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not k.startswith(_IGNORED_PREFIXES)}


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


@register_encoder("resnet50_trunc")
def resnet50_trunc(*, target_img_size: int = 224,
                   weights_path: str | os.PathLike[str] | None = None) -> Encoder:
    """CLAM's resnet50_trunc (1024-d); weights from the argument, the env var, or the hub."""
    model = ResNet50Trunc()
    local = weights_path or os.environ.get(RESNET50_TRUNC_ENV) or None
    if local:
        source = str(Path(local))
        load_trunk_weights(model, _read_weights(Path(local)), source=source)
    else:
        source = f"timm/{RESNET50_TRUNC_HUB_ID}"
        load_trunk_weights(model, _hub_trunk_state_dict(), source=source)
    return Encoder(name="resnet50_trunc", model=model.eval(), transform=eval_transform(target_img_size),
                   dim=ResNet50Trunc.dim, weights_source=source)
