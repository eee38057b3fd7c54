"""The GPU path's logic: uint8 windows + the transform on the device, the lagged copy-back, batch
sizing from free GPU memory. Runs on the CPU; the ``gpu`` tests at the end need CUDA."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from models.encode import cuda_batch_size, gpu_patch_bytes, reading_workers
from models.encoders import Encoder, encoder_info, eval_transform
from models.extract import extract_features_dense
from wsi_core.errors import ConfigError


class _Conv(nn.Module):
    """A small seeded conv net: (B, 3, H, W) -> (B, 16), sensitive to every pixel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _encoder(size: int) -> Encoder:
    return Encoder(name="conv16", model=_Conv().eval(), transform=eval_transform(size), dim=16,
                   weights_source="seeded", input_size=size, is_cnn=True)


@pytest.fixture(scope="module")
def tiff_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    img = (gaussian_filter(rng.random((768, 1024, 3)), (2, 2, 0)) * 255 * 3 - 200).clip(0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("slide") / "tiny.tiff"
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb")
    return path


def _coords(step: int, side: int = 96) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(0, 1024 - side, step), np.arange(0, 768 - side, step), indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.int64)


@pytest.mark.parametrize("workers", [0, 1])
def test_transform_on_device_equals_pil_path(tiff_slide: Path, workers: int) -> None:
    coords = _coords(step=72)
    kw = dict(patch_level=0, patch_size=96, encoder=_encoder(64), batch_size_extract=16, num_workers=workers,
              progress=False, max_region_px=384)
    ref = extract_features_dense(tiff_slide, coords, transform_on_device=False, **kw)
    out = extract_features_dense(tiff_slide, coords, transform_on_device=True, **kw)
    assert out.shape == ref.shape == (len(coords), 16)
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() < 0.01 * scale  # resampler rounding only (see DeviceTransform)
    # without a resize the uint8 path is exact
    kw["encoder"] = _encoder(96)
    np.testing.assert_allclose(extract_features_dense(tiff_slide, coords, transform_on_device=True, **kw),
                               extract_features_dense(tiff_slide, coords, transform_on_device=False, **kw),
                               rtol=0, atol=1e-5)


def test_transform_on_device_refused_with_a_resize_first(tiff_slide: Path) -> None:
    with pytest.raises(ConfigError, match="transform_on_device"):
        extract_features_dense(tiff_slide, _coords(96), patch_level=0, patch_size=96, encoder=_encoder(64),
                               target_patch_size=48, transform_on_device=True, num_workers=0, progress=False)
    adhoc = Encoder(name="adhoc", model=_Conv(), transform=lambda im: torch.zeros(3, 96, 96), dim=16,
                    weights_source="x")
    with pytest.raises(ConfigError, match="no tensor form"):
        extract_features_dense(tiff_slide, _coords(96), patch_level=0, patch_size=96, encoder=adhoc,
                               transform_on_device=True, num_workers=0, progress=False)


def test_reading_workers_on_cuda_leave_a_core() -> None:
    assert reading_workers(None, torch.device("cpu")) == 0
    assert 1 <= reading_workers(None, torch.device("cuda")) <= 8
    assert reading_workers(3, torch.device("cuda")) == 3


def _sized(name: str) -> Encoder:
    info = encoder_info(name)
    return Encoder(name=name, model=nn.Identity(), transform=eval_transform(info.input_size), dim=info.dim,
                   weights_source="none", input_size=info.input_size, is_cnn=info.is_cnn)


def test_cuda_batch_size_scales_with_free_memory() -> None:
    gib = 2 ** 30
    for name in ("resnet50_trunc", "uni_v1", "uni_v2"):
        enc = _sized(name)
        b12 = cuda_batch_size(enc, patch_px=256, precision="bf16", free_bytes=11 * gib)
        b80 = cuda_batch_size(enc, patch_px=256, precision="bf16", free_bytes=78 * gib)
        assert 32 <= b12 <= b80 <= 1024 and b12 % 32 == 0 and b80 % 32 == 0
        assert b12 * gpu_patch_bytes(enc, 256, "bf16") <= 5.5 * gib  # half the free memory of a 12 GB card
        assert cuda_batch_size(enc, patch_px=256, precision="fp32", free_bytes=11 * gib) <= b12
    assert cuda_batch_size(_sized("resnet50_trunc"), patch_px=256, precision="bf16", free_bytes=78 * gib) == 1024
    assert cuda_batch_size(_sized("uni_v2"), patch_px=256, precision="bf16", free_bytes=gib // 4) == 32


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
def test_cuda_device_transform_matches_cpu_pil_path(tiff_slide: Path) -> None:
    from models.encoders.nets import ResNet50Trunc

    torch.manual_seed(0)
    enc = Encoder(name="resnet50_trunc", model=ResNet50Trunc().eval(), transform=eval_transform(224), dim=1024,
                  weights_source="random", input_size=224, is_cnn=True)
    coords = _coords(step=128, side=256)
    kw = dict(patch_level=0, patch_size=256, encoder=enc, batch_size_extract=8, progress=False)
    ref = extract_features_dense(tiff_slide, coords, device="cpu", num_workers=0, **kw)
    out = extract_features_dense(tiff_slide, coords, device="cuda", num_workers=2, precision="fp32", **kw)
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999
    bf = extract_features_dense(tiff_slide, coords, device="cuda", num_workers=2, precision="bf16", **kw)
    cos = (bf * ref).sum(1) / np.linalg.norm(bf, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99
