"""DeviceTransform: the encoders' PIL transform as batched tensor operations (run here on the CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from models.encoders import DeviceTransform, TransformSpec, build_transform, device_transform, eval_transform
from models.encoders.registry import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def _patches(side: int, n: int = 3) -> np.ndarray:
    """(n, side, side, 3) uint8: smooth, tissue-like texture (one patch pure noise)."""
    rng = np.random.default_rng(side)
    out = [gaussian_filter(rng.random((side, side, 3)) * 255, (1.5, 1.5, 0)) for _ in range(n - 1)]
    out.append(rng.integers(0, 256, (side, side, 3)))
    return np.stack(out).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("spec", [TransformSpec(), TransformSpec("bilinear", True),
                                  TransformSpec("bicubic", True, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)],
                         ids=["bilinear", "bilinear-crop", "bicubic-crop-clip"])
@pytest.mark.parametrize("side,size", [(256, 224), (224, 224), (512, 224), (256, 0)])
def test_device_transform_equals_pil_transform(spec: TransformSpec, side: int, size: int) -> None:
    patches = _patches(side)
    pil = build_transform(spec, size)
    ref = torch.stack([pil(Image.fromarray(p)) for p in patches])
    dev = device_transform(pil)
    assert isinstance(dev, DeviceTransform)
    out = dev(torch.from_numpy(patches))
    assert out.shape == ref.shape and out.dtype == torch.float32
    diff = (out - ref).abs()
    if size in (0, side):  # no resampling: only the normalisation's rounding
        assert float(diff.max()) < 1e-5
        return
    smooth = diff[:-1]
    # one uint8 level = 1 / (255 * std) ~ 0.0175 after normalisation
    assert float(smooth.mean()) < 0.005
    assert float(smooth.max()) < (0.02 if spec.interpolation == "bilinear" else 0.08)
    # PIL rounds between its two bicubic passes: overshoot on pure noise differs more, rarely
    assert float((diff[-1] > 0.02).float().mean()) < (0.001 if spec.interpolation == "bilinear" else 0.05)


def test_device_transform_needs_a_build_transform() -> None:
    assert device_transform(lambda img: img) is None
    assert device_transform(eval_transform(224)).size == 224


def test_device_transform_refuses_float_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        DeviceTransform(TransformSpec(), 224)(torch.zeros(2, 32, 32, 3))
