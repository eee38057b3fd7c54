"""extract_features_dense: band reads in workers give the same features as per-patch reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.encoders import Encoder, autocast_context, create_encoder, eval_transform
from models.extract import extract_features, extract_features_dense
from wsi_core.errors import ConfigError, SlideOpenError


class _MeanRGB(nn.Module):
    """A tiny stand-in encoder: per-channel mean of the normalised patch, (B, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _mean_encoder(size: int = 32) -> Encoder:
    return Encoder(name="mean_rgb", model=_MeanRGB(), transform=eval_transform(size), dim=3,
                   weights_source="none")


def _grid(x0: int, y0: int, n: int, step: int) -> np.ndarray:
    gx, gy = np.meshgrid(x0 + step * np.arange(n), y0 + step * np.arange(n), indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)


@pytest.fixture(scope="module")
def seeded_encoder(clam_reference_dir: Path) -> Encoder:
    """The shared seeded resnet50_trunc weights at 64 px (fast)."""
    path = clam_reference_dir / "checkpoints" / "resnet50_trunc_seed0.safetensors"
    return create_encoder("resnet50_trunc", target_img_size=64, weights_path=path)


@pytest.mark.shared
@pytest.mark.parametrize("num_workers", [0, 2])
def test_dense_equals_per_patch_resnet(slides_dir: Path, seeded_encoder: Encoder,
                                       num_workers: int) -> None:
    """20 patches of a 90 % overlap grid (shuffled): bit-identical fp32 features."""
    slide = slides_dir / "CMU-1-Small-Region.svs"
    coords = np.vstack([_grid(1000, 1500, 4, 25), _grid(2100, 2850, 2, 25)])  # + off-slide ones
    coords = coords[np.random.default_rng(0).permutation(len(coords))]
    kw = dict(patch_level=0, patch_size=256, encoder=seeded_encoder, progress=False)
    ref = extract_features(slide, coords, batch_size=8, num_workers=0, **kw)
    got = extract_features_dense(slide, coords, batch_size_extract=8, num_workers=num_workers, **kw)
    assert got.shape == (20, 1024) and got.dtype == np.float32
    assert np.abs(got - ref).max() == 0.0


@pytest.mark.shared
def test_dense_on_non_integer_and_integer_downsample_levels(slides_dir: Path) -> None:
    enc = _mean_encoder()
    tcga = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    coords = _grid(4100, 3300, 6, 24)   # level 1 (d = 2.0005), some off the slide
    kw = dict(patch_level=1, patch_size=128, encoder=enc, progress=False, num_workers=0)
    ref = extract_features(tcga, coords, **kw)
    np.testing.assert_array_equal(extract_features_dense(tcga, coords, **kw), ref)
    approx = extract_features_dense(tcga, coords, exact=False, **kw)  # banded: sub-pixel shift
    assert 0 < np.abs(approx - ref).max() < 0.1
    ndpi = slides_dir / "slideio_test3-DAPI-2-387.ndpi"
    coords = _grid(3701, 4603, 6, 25)   # level 2 (d = 4), odd step: several phases
    kw = dict(patch_level=2, patch_size=48, encoder=enc, progress=False, num_workers=2)
    np.testing.assert_array_equal(extract_features_dense(ndpi, coords, **kw),
                                  extract_features(ndpi, coords, **kw))


def test_dense_empty_coords_does_not_open_slide(tmp_path: Path) -> None:
    out = extract_features_dense(tmp_path / "missing.svs", np.zeros((0, 2)), patch_level=0,
                                 patch_size=256, encoder=_mean_encoder(), progress=False)
    assert out.shape == (0, 3) and out.dtype == np.float32


def test_dense_missing_slide_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SlideOpenError) as info:
        extract_features_dense(tmp_path / "gone.svs", np.zeros((2, 2)), patch_level=0,
                               patch_size=256, encoder=_mean_encoder(), num_workers=2,
                               progress=False)
    assert "\n" not in str(info.value) and "gone.svs" in str(info.value)


def test_precision_names() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match=r"encoder_arguments.precision 'fp8' is not supported.*fp32, bf16, fp16"):
        autocast_context(cpu, "fp8")
    with autocast_context(cpu, None), autocast_context(cpu, "FP32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu")
