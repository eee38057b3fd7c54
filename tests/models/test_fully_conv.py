"""models.fully_conv: integral-image window means and fidelity to the exact per-patch pass."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.encoders import Encoder, create_encoder, eval_transform
from models.extract import extract_features
from models.fully_conv import (
    box_means,
    extract_features_fully_conv,
    feature_map,
    supports_fully_conv,
)
from wsi_core.errors import ConfigError


def test_box_means_equal_brute_force() -> None:
    fmap = torch.randn(5, 7, 9, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[1, 2, 4, 6], [0, 0, 9, 7], [2.5, 1, 3.5, 2], [0.5, 0.25, 2.5, 1.25],
                          [8, 6, 12, 9]], dtype=torch.float64)
    got = box_means(fmap, boxes)
    f = fmap.double()
    want = [f[:, 2:6, 1:4].mean((1, 2)), f.mean((1, 2)), (f[:, 1, 2] + f[:, 1, 3]) / 2,
            # cols 0.5..2.5 (half, full, half), rows 0.25..1.25 (3/4 of row 0, 1/4 of row 1)
            (torch.tensor([0.75, 0.25])[None, :, None].double()
             * torch.tensor([0.5, 1, 0.5])[None, None, :].double() * f[:, :2, :3]).sum((1, 2)) / 2,
            f[:, 6, 8]]  # clipped to the map
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=0, atol=1e-5)
    assert got.shape == (5, 5) and got.dtype == torch.float32
    # windows taken 2 at a time (bounded memory) give the same means
    torch.testing.assert_close(box_means(fmap, boxes, chunk=2), got, rtol=0, atol=0)


@pytest.fixture(scope="module")
def seeded_encoder(clam_reference_dir: Path) -> Encoder:
    path = clam_reference_dir / "checkpoints" / "resnet50_trunc_seed0.safetensors"
    return create_encoder("resnet50_trunc", target_img_size=112, weights_path=path)


@pytest.mark.shared
def test_feature_map_pools_to_the_encoder_output(seeded_encoder: Encoder) -> None:
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fmap = feature_map(seeded_encoder.model, x)
        assert fmap.shape == (2, 1024, 7, 7)
        whole = box_means(fmap[0], torch.tensor([[0.0, 0.0, 7.0, 7.0]]))
        torch.testing.assert_close(whole[0], seeded_encoder.model(x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.shared
def test_fully_conv_close_to_exact_features(slides_dir: Path, seeded_encoder: Encoder) -> None:
    """36 windows of a 90 % overlap grid, 128 px patches at 112 px: cosine > 0.9 to the exact
    pass (measured 0.99+ with the shared seeded weights, see benchmarks/bench_dense.py)."""
    slide = slides_dir / "CMU-1-Small-Region.svs"
    gx, gy = np.meshgrid(900 + 12 * np.arange(6), 1300 + 12 * np.arange(6), indexing="ij")
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
    kw = dict(patch_level=0, patch_size=128, encoder=seeded_encoder)
    exact = extract_features(slide, coords, num_workers=0, progress=False, **kw)
    approx = extract_features_fully_conv(slide, coords, tile_size=224, margin=32, **kw)  # 2x2 tiles
    assert approx.shape == exact.shape and approx.dtype == np.float32
    cos = (exact * approx).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(approx, axis=1)
    assert cos.min() > 0.9, cos.min()
    # small tiles (several regions) and one big tile agree closely: margins hide tile borders
    one = extract_features_fully_conv(slide, coords, tile_size=1024, margin=32, **kw)
    cos2 = (one * approx).sum(1) / np.linalg.norm(one, axis=1) / np.linalg.norm(approx, axis=1)
    assert cos2.min() > 0.99


def test_unsupported_encoder_and_empty(tmp_path: Path) -> None:
    class _Mean(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    enc = Encoder(name="uni_v2", model=_Mean(), transform=eval_transform(32), dim=3,
                  weights_source="none")
    assert not supports_fully_conv(enc)
    with pytest.raises(ConfigError, match="encoder 'uni_v2' has no fully-convolutional form .*"
                                          "set fully_convolutional: false"):
        extract_features_fully_conv(tmp_path / "x.svs", np.zeros((1, 2)), patch_level=0,
                                    patch_size=64, encoder=enc)
    trunk = nn.Module()
    for name in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3"):
        setattr(trunk, name, nn.Identity())
    fake = Encoder(name="resnet50_trunc", model=trunk, transform=eval_transform(32), dim=3,
                   weights_source="none")
    assert supports_fully_conv(fake)
    out = extract_features_fully_conv(tmp_path / "missing.svs", np.zeros((0, 2)), patch_level=0,
                                      patch_size=64, encoder=fake)
    assert out.shape == (0, 3) and out.dtype == np.float32


@pytest.mark.shared
def test_fully_conv_differs_from_exact_only_by_context(slides_dir: Path, clam_reference_dir: Path) -> None:
    """Where the region is the patch itself (isolated windows, margin 0) the fully-convolutional
    features are the exact ones: reading, resizing, normalising and pooling add nothing. With
    real context around the windows (margin 64) they differ: the exact pass zero-pads each patch
    border, which every layer3 cell sees (receptive field > the patch). That padding, not region
    borders or window alignment, is the fully-convolutional mode's approximation (measured on
    ImageNet weights in benchmarks/bench_fidelity.py)."""
    enc = create_encoder("resnet50_trunc", target_img_size=112,
                         weights_path=clam_reference_dir / "checkpoints" / "resnet50_trunc_seed0.safetensors")
    for name, mod in enc.model.named_modules():   # switch the residual branches on (timm zero-inits
        if name.endswith("bn3"):                  # bn3), so the trunk has spatial context
            mod.weight.data.fill_(1.0)
    slide = slides_dir / "CMU-1-Small-Region.svs"
    coords = np.array([[900, 1300], [1300, 1300], [900, 1700]], np.int64)   # 400 px apart: one region each
    kw = dict(patch_level=0, patch_size=128, encoder=enc)
    exact = extract_features(slide, coords, num_workers=0, progress=False, **kw)
    alone = extract_features_fully_conv(slide, coords, tile_size=128, margin=0, **kw)
    np.testing.assert_allclose(alone, exact, rtol=0, atol=1e-4 * np.abs(exact).max())
    context = extract_features_fully_conv(slide, coords, tile_size=256, margin=64, **kw)
    cos = (exact * context).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(context, axis=1)
    assert cos.max() < 0.9999 and cos.min() > 0.9, cos
