"""models.encode: the one encode loop over patch sources, and the in-memory image front end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.encode import ImageSource, PatchSource, encode, encode_image_patches
from models.encoders import Encoder, eval_transform
from wsi_core.errors import ConfigError


class _MeanRGB(nn.Module):
    """A tiny stand-in encoder: per-channel mean of the normalised patch, (B, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _encoder(size: int = 16) -> Encoder:
    return Encoder(name="mean_rgb", model=_MeanRGB(), transform=eval_transform(size), dim=3, weights_source="none")


def _image(h: int = 96, w: int = 128) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


class _Shuffled(PatchSource):
    """Yields its patches in reverse order, two per batch, and records its calls."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.n, self.desc, self.calls = x, len(x), "shuffled", []

    def prepare(self, *, num_workers: int) -> None:
        self.calls.append(("prepare", num_workers))

    def batches(self, *, num_workers: int, pin_memory: bool):
        for start in range(self.n - 2, -2, -2):
            rows = np.arange(max(start, 0), start + 2)
            yield rows, self.x[rows]

    def close(self) -> None:
        self.calls.append(("close",))


def test_rows_filled_by_index_whatever_the_batch_order() -> None:
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    src = _Shuffled(x)
    out = encode(src, _encoder(), progress=True)
    assert out.dtype == np.float32 and out.shape == (5, 3)
    np.testing.assert_array_equal(out, x.mean(dim=(2, 3)).numpy())
    assert src.calls == [("prepare", 0), ("close",)]           # automatic workers on CPU: 0


def test_empty_source_checks_nothing() -> None:
    src = _Shuffled(torch.zeros(0, 3, 8, 8))
    out = encode(src, _encoder(), device="cuda:7", precision="int8")   # neither is looked at
    assert out.shape == (0, 3) and src.calls == []


def test_bad_precision_and_device_close_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    src = _Shuffled(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="encoder_arguments.precision 'fp8' is not supported"):
        encode(src, _encoder(), precision="fp8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' requested but CUDA is not available"):
        encode(src, _encoder(), device="cuda")
    assert src.calls == []


def test_close_after_an_error() -> None:
    class Broken(_Shuffled):
        def forward(self, *a, **kw):
            raise RuntimeError("boom")

    src = Broken(torch.zeros(2, 3, 8, 8))
    with pytest.raises(RuntimeError, match="boom"):
        encode(src, _encoder())
    assert src.calls[-1] == ("close",)


def test_image_patches_equal_the_per_patch_transform() -> None:
    """encode_image_patches = transform each cut patch with PIL, then the model, in any batching."""
    rgb, enc = _image(), _encoder()
    coords = np.array([[0, 0], [64, 32], [96, 64], [17, 5], [40, 40]], np.int64)
    want = torch.stack([enc.transform(Image.fromarray(rgb[y:y + 32, x:x + 32])) for x, y in coords]).mean(dim=(2, 3))
    for bs in (1, 2, 16):
        got = encode_image_patches(enc, rgb, coords, patch_size=32, batch_size=bs)
        np.testing.assert_array_equal(got, want.numpy())
    assert encode_image_patches(enc, rgb, np.zeros((0, 2)), patch_size=32).shape == (0, 3)


def test_image_source_batches() -> None:
    src = ImageSource(_image(), np.array([[0, 0]] * 5), patch_size=8, transform=eval_transform(8), batch_size=2)
    got = [(rows.tolist(), tuple(x.shape)) for rows, x in src.batches(num_workers=0, pin_memory=False)]
    assert got == [([0, 1], (2, 3, 8, 8)), ([2, 3], (2, 3, 8, 8)), ([4], (1, 3, 8, 8))]


def test_precision_and_channels_last_reach_the_model() -> None:
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((torch.is_autocast_enabled("cpu"), x.is_contiguous(memory_format=torch.channels_last)))
            return x.mean(dim=(2, 3))

    enc = Encoder(name="probe", model=Probe(), transform=eval_transform(8), dim=3, weights_source="none")
    encode_image_patches(enc, _image(), np.array([[0, 0], [8, 8]]), patch_size=8, precision="bf16",
                         channels_last=True)
    encode_image_patches(enc, _image(), np.array([[0, 0]]), patch_size=8)
    assert seen == [(True, True), (False, False)]


@pytest.mark.shared
def test_image_front_end_equals_slide_front_end(slides_dir: Path) -> None:
    """The same pixels give the same features whether they come from the slide or from memory."""
    from models.extract import extract_features
    from wsi_core.slide import open_slide

    slide = slides_dir / "CMU-1-Small-Region.svs"
    coords = np.array([[1000, 1500], [1064, 1500], [1200, 1700]], np.int64)
    enc = _encoder(32)
    with open_slide(slide) as s:
        rgb = s.read_region((1000, 1500), 0, (300, 300))
    from_slide = extract_features(slide, coords, patch_level=0, patch_size=64, encoder=enc, num_workers=0,
                                  progress=False)
    from_memory = encode_image_patches(enc, rgb, coords - [1000, 1500], patch_size=64)
    np.testing.assert_array_equal(from_slide, from_memory)
