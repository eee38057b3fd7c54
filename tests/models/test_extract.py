"""Feature extraction plumbing and the grid-overlap reuse map."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.encoders import Encoder, eval_transform
from models.encode import reading_workers, resolve_device
from models.extract import extract_features, reuse_map
from wsi_core.errors import ConfigError, SlideOpenError


class _MeanRGB(nn.Module):
    """A tiny stand-in encoder: per-channel mean of the normalised patch, (B, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _encoder(size: int = 32) -> Encoder:
    return Encoder(name="mean_rgb", model=_MeanRGB(), transform=eval_transform(size), dim=3,
                   weights_source="none")


def test_reuse_map_finds_shared_coords() -> None:
    old = np.array([[0, 0], [256, 0], [512, 0], [0, 256], [256, 256]], dtype=np.int64)
    new = np.array([[128, 0], [256, 0], [0, 256], [384, 128], [0, 0], [256, 256]], dtype=np.int64)
    idx_new, idx_old = reuse_map(new, old)
    assert idx_new.tolist() == [1, 2, 4, 5] and idx_old.tolist() == [1, 3, 0, 4]
    np.testing.assert_array_equal(new[idx_new], old[idx_old])
    assert idx_new.dtype == np.int64 and idx_old.dtype == np.int64


def test_reuse_map_edge_cases() -> None:
    empty = np.zeros((0, 2), np.int64)
    a, b = reuse_map(empty, np.array([[1, 2]]))
    assert a.shape == (0,) and b.shape == (0,)
    # x and y are not interchangeable; large coordinates are fine
    a, b = reuse_map(np.array([[2, 1], [10**9, 7]]), np.array([[1, 2], [10**9, 7]]))
    assert a.tolist() == [1] and b.tolist() == [1]


def test_reuse_map_large_grid_is_vectorised() -> None:
    xs, ys = np.meshgrid(np.arange(0, 100_000, 128), np.arange(0, 50_000, 128))
    fine = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)          # step 128
    coarse = fine[(fine[:, 0] % 256 == 0) & (fine[:, 1] % 256 == 0)][::-1]  # step 256, reversed
    idx_new, idx_old = reuse_map(fine, coarse)
    assert len(idx_new) == len(coarse)
    np.testing.assert_array_equal(fine[idx_new], coarse[idx_old])


def test_extract_empty_coords_does_not_open_slide(tmp_path: Path) -> None:
    out = extract_features(tmp_path / "missing.svs", np.zeros((0, 2)), patch_level=0,
                           patch_size=256, encoder=_encoder(), progress=False)
    assert out.shape == (0, 3) and out.dtype == np.float32


def test_extract_missing_slide(tmp_path: Path) -> None:
    with pytest.raises(SlideOpenError, match="missing.svs"):
        extract_features(tmp_path / "missing.svs", np.zeros((2, 2)), patch_level=0,
                         patch_size=256, encoder=_encoder(), num_workers=0, progress=False)


def test_cuda_requested_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' requested but CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.shared
@pytest.mark.parametrize("num_workers", [0, 2])
def test_extract_order_and_workers(slides_dir: Path, num_workers: int) -> None:
    """Rows follow coords order for any batch size / worker count, and match a direct read."""
    from PIL import Image

    from wsi_core.slide import open_slide

    slide_path = slides_dir / "CMU-1-Small-Region.svs"
    coords = np.array([[1000, 1500], [0, 0], [1200, 2200], [600, 900], [1600, 400]], np.int64)
    enc = _encoder()
    out = extract_features(slide_path, coords, patch_level=0, patch_size=64, encoder=enc,
                           batch_size=2, num_workers=num_workers, progress=num_workers == 2)
    with open_slide(slide_path) as slide:
        direct = torch.stack([enc.transform(Image.fromarray(slide.read_region(tuple(c), 0, (64, 64))))
                              for c in coords])
    np.testing.assert_allclose(out, direct.mean(dim=(2, 3)).numpy(), rtol=0, atol=1e-6)
    assert len(np.unique(out.round(4), axis=0)) == len(coords)


def test_extract_missing_slide_with_workers(tmp_path: Path) -> None:
    with pytest.raises(SlideOpenError) as info:
        extract_features(tmp_path / "gone.svs", np.zeros((2, 2)), patch_level=0,
                         patch_size=256, encoder=_encoder(), num_workers=2, progress=False)
    assert "\n" not in str(info.value) and "gone.svs" in str(info.value)


def test_reading_workers_automatic_and_explicit() -> None:
    # automatic: read between encoder batches on CPU, a few worker processes feeding a GPU
    assert reading_workers(None, torch.device("cpu")) == 0
    assert 1 <= reading_workers(None, torch.device("cuda")) <= 4
    # an explicit number is honoured on either device
    assert reading_workers(3, torch.device("cpu")) == 3
    assert reading_workers(0, torch.device("cuda")) == 0
