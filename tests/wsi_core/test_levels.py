"""wsi_core.levels: level -1, level range checks, ROI checks and level-0 <-> level px."""
from __future__ import annotations

import numpy as np
import pytest

from wsi_core.errors import ConfigError, RoiError
from wsi_core.levels import (check_roi, patch_footprint_level0, region_size_at_level, resolve_level, roi_canvas,
                             to_level_px)


class FakeSlide:
    """Three levels at downsamples 1, 4, 16 of a 4096 x 3072 slide."""

    slide_id = "fake"
    level_count = 3
    level_dimensions = [(4096, 3072), (1024, 768), (256, 192)]
    level_downsamples = [(1.0, 1.0), (4.0, 4.0), (16.0, 16.0)]

    def best_level_for_downsample(self, ds: float) -> int:
        return max(i for i, (d, _) in enumerate(self.level_downsamples) if d <= ds)


def test_level_minus_one_is_the_best_level_for_downsample_32():
    assert resolve_level(FakeSlide(), -1) == 2
    assert resolve_level(FakeSlide(), 1) == 1


def test_missing_level_names_the_key():
    with pytest.raises(ConfigError, match=r"fake: vis_level 3 does not exist \(levels 0-2\); set --vis_level to -1"):
        resolve_level(FakeSlide(), 3, key="--vis_level")
    with pytest.raises(ConfigError, match="seg_level 7 does not exist"):
        resolve_level(FakeSlide(), 7, name="seg_level", key="seg_level")


def test_roi_checks():
    assert check_roi((1, 2, 30, 40), (100, 100)) == (1, 2, 30, 40)
    with pytest.raises(RoiError, match=r"^s1: ROI \(x1=5, y1=0, x2=5, y2=9\) is empty"):
        check_roi((5, 0, 5, 9), (100, 100), slide_id="s1")
    with pytest.raises(RoiError, match="lies outside the 100x100 slide"):
        check_roi((200, 0, 300, 9), (100, 100))
    with pytest.raises(RoiError, match="under one px"):
        roi_canvas(FakeSlide(), (0, 0, 10, 10), np.array([1 / 16, 1 / 16]), 2)


def test_roi_canvas_and_region_sizes():
    s = FakeSlide()
    assert roi_canvas(s, None, np.array([0.25, 0.25]), 1) == ((0, 0), (4096, 3072), (1024, 768))
    assert roi_canvas(s, (400, 800, 1200, 1600), np.array([0.25, 0.25]), 1) == ((400, 800), (1200, 1600), (200, 200))
    assert region_size_at_level(s, 1, (400, 800, 1201, 1600)) == (200, 200)
    assert region_size_at_level(s, 2, None) == (256, 192)


def test_level_px_and_patch_footprint():
    assert to_level_px(np.array([[5, 8], [0, 17]]), np.array([0.25, 0.25])).tolist() == [[2, 2], [0, 5]]
    assert patch_footprint_level0(FakeSlide(), patch_size=256, patch_level=1) == (1024, 1024)
    assert patch_footprint_level0(FakeSlide(), patch_size=256, patch_level=0, custom_downsample=2) == (512, 512)
