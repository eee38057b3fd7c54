"""models.train.attention_maps: spatial and grid attention images."""
from __future__ import annotations

import numpy as np
import pytest

from models.train.attention_maps import grid_attention_image, patch_size_from_coords, spatial_attention_image
from vis_utils.raster import colormap_lut


def test_spatial_image_places_patches_at_their_coordinates() -> None:
    coords = np.array([[1000, 2000], [1256, 2000], [1000, 2256 + 512]])
    img, ds = spatial_attention_image(np.array([3.0, -1.0, 0.5]), coords, patch_size_level0=256, downsample=32)
    assert ds == 32 and img.shape == ((256 * 4) // 32, 512 // 32, 3)
    lut = colormap_lut("jet")
    # rank percentiles 100, 33.3, 66.7 -> LUT entries of 1.0, 1/3, 2/3; an empty row is white
    assert (img[0, 0] == lut[255]).all() and (img[0, 8] == lut[int(256 / 3)]).all()
    assert (img[9, 0] == 255).all() and (img[-1, 0] == lut[int(2 * 256 / 3)]).all()
    big, ds = spatial_attention_image(np.zeros(2), np.array([[0, 0], [100_000, 0]]), patch_size_level0=256, max_size=500)
    assert ds == 201 and big.shape[1] <= 500
    with pytest.raises(ValueError, match="3 attention scores but coords of shape \\(2, 2\\)"):
        spatial_attention_image(np.zeros(3), coords[:2], patch_size_level0=256)


def test_overlapping_patches_are_averaged() -> None:
    coords = np.array([[0, 0], [128, 0]])
    img, _ = spatial_attention_image(np.array([0.0, 1.0]), coords, patch_size_level0=256, downsample=128)
    lut = colormap_lut("jet")
    # percentiles 50 and 100; the middle canvas px is covered by both: mean 0.75
    assert (img[0, 0] == lut[128]).all() and (img[0, 1] == lut[192]).all() and (img[0, 2] == lut[255]).all()


def test_grid_and_patch_size() -> None:
    g = grid_attention_image(np.arange(10.0), cell=4)
    assert g.shape == (12, 16, 3) and (g[-1, -1] == 255).all()
    c = np.array([[0, 0], [512, 0], [0, 512]])
    assert patch_size_from_coords(c) == 512
    assert patch_size_from_coords(c, {"patch_size_level0": 224}) == 224
    assert patch_size_from_coords(c, {"patch_size": 256, "patch_level": 1}) == 512
