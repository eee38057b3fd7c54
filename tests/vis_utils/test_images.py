"""save_image: format by suffix, JPEG quality, atomic write."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from vis_utils.images import save_image


@pytest.fixture(scope="module")
def img():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)


@pytest.mark.parametrize("quality", [100, 75])
def test_jpeg_same_bytes_as_pil(tmp_path, img, quality):
    out = save_image(img, tmp_path / "sub" / "a.JPG", quality=quality)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    assert out.read_bytes() == buf.getvalue()
    assert [p.name for p in out.parent.iterdir()] == ["a.JPG"]  # no temp file left


def test_png_and_tiff_lossless(tmp_path, img):
    np.testing.assert_array_equal(np.asarray(Image.open(save_image(img, tmp_path / "a.png"))), img)
    tif = save_image(img, tmp_path / "a.tiff")
    np.testing.assert_array_equal(tifffile.imread(tif), img)
    with tifffile.TiffFile(tif) as t:
        assert t.pages[0].photometric == tifffile.PHOTOMETRIC.RGB


def test_bad_input(tmp_path, img):
    with pytest.raises(ValueError, match=r"unknown image suffix '\.bmp'; use one of"):
        save_image(img, tmp_path / "a.bmp")
    with pytest.raises(ValueError, match="needs a uint8 image"):
        save_image(img.astype(float), tmp_path / "a.png")
    with pytest.raises(ValueError, match="quality must be 1-100"):
        save_image(img, tmp_path / "a.jpg", quality=0)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_old_file(tmp_path, img):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        save_image(np.zeros((2, 2, 5), np.uint8), target)
    assert target.read_bytes() == b"old"
