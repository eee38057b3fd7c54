"""Evaluation transforms of the encoders: a :class:`~models.encoders.TransformSpec` -> a
torchvision ``Compose`` (PIL RGB image -> (3, size, size) float32 tensor).

torchvision is imported when a transform is built, not when this module is imported.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .registry import TransformSpec

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

__all__ = ["build_transform", "eval_transform"]


def build_transform(spec: TransformSpec, size: int) -> Callable[[Image.Image], Tensor]:
    """``[Resize(size, spec.interpolation)] [CenterCrop(size)] ToTensor Normalize(spec.mean, spec.std)``.

    ``size``: px side; ``<= 0`` skips the resize and the crop (the patch keeps its size, CLAM's
    ``target_img_size: -1``). Resize scales the shorter side to ``size`` (torchvision).
    """
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    steps: list[Callable] = []
    if size > 0:
        steps.append(transforms.Resize(size, interpolation=InterpolationMode(spec.interpolation)))
        if spec.center_crop:
            steps.append(transforms.CenterCrop(size))
    steps += [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    return transforms.Compose(steps)


def eval_transform(target_img_size: int) -> Callable[[Image.Image], Tensor]:
    """CLAM's eval transform: [Resize(size) if size > 0 (bilinear)], ToTensor, ImageNet Normalize."""
    return build_transform(TransformSpec(), target_img_size)
