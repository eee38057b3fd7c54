"""Evaluation transforms of the encoders: a :class:`~models.encoders.TransformSpec` -> a
torchvision ``Compose`` (PIL RGB image -> (3, size, size) float32 tensor), and the same steps as
batched tensor operations on the encoder's device (:class:`DeviceTransform`: uint8 patches are
uploaded and resized / normalised on the GPU instead of one PIL image at a time on the CPU).

torchvision is imported when a transform is built, not when this module is imported.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from .registry import TransformSpec

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

__all__ = ["build_transform", "eval_transform", "DeviceTransform", "device_transform", "HostBatchTransform",
           "host_batch_transform"]


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
    compose = transforms.Compose(steps)
    compose.spec, compose.size = spec, int(size)  # read by device_transform()
    return compose


def eval_transform(target_img_size: int) -> Callable[[Image.Image], Tensor]:
    """CLAM's eval transform: [Resize(size) if size > 0 (bilinear)], ToTensor, ImageNet Normalize."""
    return build_transform(TransformSpec(), target_img_size)


class DeviceTransform:
    """:func:`build_transform`'s steps as batched tensor operations, on whatever device the batch is.

    Call with a (b, H, W, 3) uint8 RGB tensor (patches as read) -> (b, 3, size, size) float32.
    Resize: ``torch.nn.functional.interpolate`` of the shorter side to ``size`` with
    ``antialias=True`` (the PIL-style filter torchvision uses for tensors), rounded to whole
    uint8 levels like PIL's uint8 output; then the centre crop, /255 and ``(x - mean) / std``.
    Equal to the PIL transform within about 0.02 after normalisation (1-2 uint8 levels where the
    two resamplers round differently; identical when no resize happens), see
    ``tests/models/encoders/test_device_transform.py``.
    """

    def __init__(self, spec: TransformSpec, size: int) -> None:
        self.spec, self.size = spec, int(size)

    def __call__(self, x: Tensor) -> Tensor:
        import torch
        import torch.nn.functional as F

        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"DeviceTransform takes (b, H, W, 3) uint8 patches, got {tuple(x.shape)} {x.dtype}")
        x = x.permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        if self.size > 0 and min(h, w) != self.size:
            s = self.size / min(h, w)
            oh, ow = (self.size, max(1, int(w * s))) if h <= w else (max(1, int(h * s)), self.size)
            x = F.interpolate(x, size=(oh, ow), mode=self.spec.interpolation, align_corners=False,
                              antialias=True).round_().clamp_(0, 255)
        if self.size > 0 and self.spec.center_crop:
            h, w = x.shape[-2:]
            top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
            x = x[..., top:top + self.size, left:left + self.size]
        mean = torch.tensor(self.spec.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.spec.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"DeviceTransform(size={self.size}, {self.spec})"


def device_transform(transform: object) -> DeviceTransform | None:
    """The :class:`DeviceTransform` equal to ``transform`` when it was made by
    :func:`build_transform` (it carries its spec), else None (an ad-hoc transform stays on the CPU)."""
    spec, size = getattr(transform, "spec", None), getattr(transform, "size", None)
    if not isinstance(spec, TransformSpec) or size is None:
        return None
    return DeviceTransform(spec, size)


class HostBatchTransform:
    """:func:`build_transform` split for CPU batches: its PIL steps (resize, centre crop) per patch
    (:meth:`pil`), its tensor steps (``ToTensor``, ``Normalize``) once per batch (:meth:`batch`).

    Bit-identical to the per-patch ``Compose``: ``ToTensor`` and ``Normalize`` are elementwise
    float32 ``/ 255``, ``- mean`` and ``/ std``, the same operations on a batch as on each patch;
    only the per-patch tensor allocations, copies and the ``torch.stack`` go away. The batch comes
    out as ``(b, 3, H, W)`` float32 in channels-last memory (the permuted uint8 layout), which a
    channels-last encoder takes without a copy.
    """

    def __init__(self, transform: Callable) -> None:
        from torchvision import transforms

        self.spec, self.size = transform.spec, int(transform.size)
        steps = [t for t in transform.transforms if isinstance(t, (transforms.Resize, transforms.CenterCrop))]
        self.pil_steps = transforms.Compose(steps) if steps else None

    def pil(self, img: Image.Image) -> np.ndarray:
        """``(H, W, 3)`` uint8 of one RGB patch after the PIL steps."""
        return np.asarray(self.pil_steps(img) if self.pil_steps is not None else img, dtype=np.uint8)

    def batch(self, patches: np.ndarray) -> Tensor:
        """``(b, 3, H, W)`` float32 from ``(b, H, W, 3)`` uint8 patches (:meth:`pil` outputs)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).to(torch.float32).div(255)
        mean = torch.as_tensor(self.spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.as_tensor(self.spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)


def host_batch_transform(transform: object) -> HostBatchTransform | None:
    """The :class:`HostBatchTransform` of a :func:`build_transform` transform, else None (an
    ad-hoc transform is applied per patch as it is)."""
    if not isinstance(getattr(transform, "spec", None), TransformSpec) or getattr(transform, "size", None) is None:
        return None
    return HostBatchTransform(transform)
