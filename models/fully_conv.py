"""Fully-convolutional dense features (Marugoto's high-resolution ``--no-pool`` idea).

For a CNN encoder whose patch feature is the global average of a convolutional feature map
(``resnet50_trunc``: layer3, stride 16, 1024 channels), the convolutions are run **once** over a
large region of the slide instead of once per overlapping patch; each patch window's feature is
the mean of the feature-map cells its window covers. At 90 % overlap (step 26 px for 256-px
patches) that is ~100x fewer pixels through the network.

Pipeline per region (a band / column chunk of the grid, ``wsi_core.regions.plan_bands``):
read it at ``patch_level`` with ``margin`` extra px on every side, resize it by
``target_img_size / patch_size`` (PIL bilinear, as the patch transform's ``Resize`` does), apply
``ToTensor`` + ``Normalize``, run the trunk to layer3 -> ``(C, ceil(H/16), ceil(W/16))``; cell
``j`` stands for resized px ``[16 j, 16 j + 16)``. A window ``[u0, u1) x [v0, v1)`` (in cells,
fractional) is averaged with a 2-D integral image of the map, bilinearly interpolated at the
fractional corners: that is the exact area-weighted mean of the piecewise-constant cells, for
all windows at once (no loop over patches).

Approximation against the exact per-patch pass (``extract_features``): there each patch is
resized on its own and the convolutions zero-pad at the patch border, so its border cells see
zeros where the fully-convolutional map sees the neighbouring tissue; windows not on the
16-px cell grid average fractional cells; resizing a region instead of each patch moves pixel
centres by under one px. Region borders: each read carries ``margin`` px of real context
beyond the outermost windows (zero padding only begins past it; past the slide edge OpenSlide
gives black, as for a patch). Measured fidelity: see ``benchmarks/bench_dense.py`` and, on real
ImageNet weights with the real CLAM demo model, ``benchmarks/bench_fidelity.py``.

What limits the fidelity (measured on the TCGA slide with ImageNet ResNet-50 weights): the exact
pass's zero padding at every patch border, which every layer3 cell of a 224-px patch sees (its
receptive field is larger than the patch). Isolated windows with ``margin=0`` reproduce the exact
features to float rounding (the reading, resizing, normalising and pooling add nothing; tested);
with context the cosine to the exact features is ~0.981 whatever the margin (64 -> 384 px:
0.9812 -> 0.9816) and whether the windows sit on the 16-px cell grid (step 128 px) or not
(step 26 px): neither region borders nor window alignment is worth fixing; the remaining
difference is the context the exact pass does not see.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import ContextManager, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from wsi_core.errors import ConfigError
from wsi_core.regions import Band, level_downsample, plan_bands
from wsi_core.slide import Slide, open_slide

from .encode import PatchSource, encode
from .encoders import IMAGENET_MEAN, IMAGENET_STD, Encoder, encoder_info, fully_conv_encoders, list_encoders

__all__ = ["FEATURE_STRIDE", "supports_fully_conv", "feature_map", "box_means", "RegionSource",
           "extract_features_fully_conv"]

FEATURE_STRIDE = 16  # resized px per layer3 cell
_TRUNK = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3")


def supports_fully_conv(encoder: Encoder) -> bool:
    """Whether ``encoder`` has a fully-convolutional form here: its registry entry says so
    (``EncoderInfo.fully_conv``) and its model is a ResNet trunk to layer3."""
    eligible = encoder.name in list_encoders() and encoder_info(encoder.name).fully_conv
    return eligible and all(hasattr(encoder.model, n) for n in _TRUNK)


def feature_map(model: nn.Module, x: Tensor) -> Tensor:
    """Layer3 map of a ResNet trunk: ``(B, 3, H, W)`` -> ``(B, 1024, ceil(H/16), ceil(W/16))``."""
    x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
    return model.layer3(model.layer2(model.layer1(x)))


def _integral_at(integral: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Bilinear interpolation of ``integral`` ``(h+1, w+1, C)`` at fractional ``(u, v)`` (k,)
    -> ``(k, C)``: the integral of the piecewise-constant map over ``[0, u] x [0, v]``."""
    hp, wp = integral.shape[0] - 1, integral.shape[1] - 1
    u = u.clamp(0, wp)
    v = v.clamp(0, hp)
    u0 = u.floor().long().clamp(max=max(wp - 1, 0))
    v0 = v.floor().long().clamp(max=max(hp - 1, 0))
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    u1, v1 = (u0 + 1).clamp(max=wp), (v0 + 1).clamp(max=hp)
    return (integral[v0, u0] * (1 - fu) * (1 - fv) + integral[v0, u1] * fu * (1 - fv)
            + integral[v1, u0] * (1 - fu) * fv + integral[v1, u1] * fu * fv)


def box_means(fmap: Tensor, boxes: Tensor, *, chunk: int = 2048) -> Tensor:
    """Area-weighted means of ``fmap`` ``(C, h, w)`` over ``boxes`` ``(k, 4)``
    ``(u0, v0, u1, v1)`` in cell units (fractional, ``u`` along the width) -> ``(k, C)``
    float32. Computed in float64 from one integral image; boxes are clipped to the map.

    The windows are taken ``chunk`` at a time: each costs ``chunk x C`` float64 gathers (16 MiB
    per 2048 windows of 1024 channels), so memory stays bounded by the region, not by its window
    count (a 2048-px region at 95 % overlap holds ~19,000 windows: 2.5 GiB of gathers at once).
    """
    c, h, w = fmap.shape
    integral = torch.zeros((h + 1, w + 1, c), dtype=torch.float64, device=fmap.device)
    integral[1:, 1:] = fmap.double().permute(1, 2, 0).cumsum(0).cumsum(1)
    b = boxes.to(device=fmap.device, dtype=torch.float64)
    out = torch.empty((len(b), c), dtype=torch.float32, device=fmap.device)
    for i in range(0, len(b), max(int(chunk), 1)):
        bb = b[i:i + chunk]
        u0, v0 = bb[:, 0].clamp(0, w), bb[:, 1].clamp(0, h)
        u1, v1 = bb[:, 2].clamp(0, w), bb[:, 3].clamp(0, h)
        total = (_integral_at(integral, u1, v1) - _integral_at(integral, u0, v1)
                 - _integral_at(integral, u1, v0) + _integral_at(integral, u0, v0))
        area = ((u1 - u0) * (v1 - v0)).clamp_min(1e-12)[:, None]
        out[i:i + chunk] = total / area
    return out


def _transform_params(encoder: Encoder) -> tuple[int | None, tuple, tuple]:
    """``(resize side or None, mean, std)`` of a torchvision ``Compose`` eval transform."""
    size, mean, std = None, IMAGENET_MEAN, IMAGENET_STD
    for t in getattr(encoder.transform, "transforms", []):
        kind = type(t).__name__
        if kind == "Resize":
            s = t.size if isinstance(t.size, int) else list(t.size)
            if isinstance(s, list) and not (len(s) == 1 or (len(s) == 2 and s[0] == s[1])):
                raise ConfigError(f"encoder {encoder.name}: fully-convolutional features need a "
                                  f"square Resize, got {t.size}; set fully_convolutional: false")
            size = int(s if isinstance(s, int) else s[0])
        elif kind == "Normalize":
            mean, std = tuple(t.mean), tuple(t.std)
    return size, mean, std


def _region_tensor(region: np.ndarray, scale: float, mean: tuple, std: tuple
                   ) -> tuple[Tensor, float, float]:
    """Resize ``region`` (H, W, 3) uint8 by ``scale`` (PIL bilinear) and normalise ->
    ``((1, 3, H', W') float32, sx, sy)`` with the exact per-axis scales ``W'/W``, ``H'/H``."""
    h, w = region.shape[:2]
    img = Image.fromarray(region)
    if scale != 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    sd = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((arr - m) / sd)[None], img.width / w, img.height / h


class RegionSource(PatchSource):
    """One region per band of the grid (``wsi_core.regions.plan_bands``, ``exact=False``), read
    with ``margin`` px of context; its forward runs the trunk once over the region and pools every
    window of the band from the feature map (:func:`box_means`)."""

    def __init__(self, slide_path: str | os.PathLike[str], coords: np.ndarray, *, encoder: Encoder,
                 patch_level: int, patch_size: int, tile_size: int, margin: int) -> None:
        self.slide_path = Path(slide_path)
        self.coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.n, self.desc = len(self.coords), self.slide_path.name
        self.encoder = encoder
        self.patch_level, self.patch_size = int(patch_level), int(patch_size)
        self.tile_size, self.margin = int(tile_size), max(int(margin), 0)
        self.scale, self.norm = 1.0, (IMAGENET_MEAN, IMAGENET_STD)
        self.slide: Slide | None = None
        self.downsample = 1.0
        self.bands: list[Band] = []

    def prepare(self, *, num_workers: int) -> None:
        """Read the scale and normalisation off the encoder's transform, open the slide, plan
        the regions.

        Raises:
            ConfigError: a non-square Resize in the transform. SlideOpenError: a bad slide.
        """
        size, mean, std = _transform_params(self.encoder)
        self.scale = (size / self.patch_size) if size and size > 0 else 1.0
        self.norm = (mean, std)
        self.slide = open_slide(self.slide_path)
        self.downsample = level_downsample(self.slide, self.patch_level)
        self.bands = plan_bands(self.coords, downsample=self.downsample, patch_size=self.patch_size,
                                exact=False,
                                max_region_px=max(self.tile_size - 2 * self.margin, self.patch_size))

    def batches(self, *, num_workers: int, pin_memory: bool) -> Iterator[tuple[np.ndarray, tuple[Tensor, Tensor]]]:
        """Yield ``(band rows, (region (1, 3, H', W') float32, window boxes (k, 4) float64 in cells))``."""
        assert self.slide is not None, "prepare() first"
        m = self.margin
        m0 = int(round(m * self.downsample))
        for band in self.bands:
            loc = (band.location[0] - m0, band.location[1] - m0)
            size = (band.size[0] + 2 * m, band.size[1] + 2 * m)
            x, sx, sy = _region_tensor(self.slide.read_region(loc, self.patch_level, size), self.scale, *self.norm)
            off = torch.from_numpy(band.offsets + m).double()
            boxes = torch.stack([off[:, 0] * sx, off[:, 1] * sy, (off[:, 0] + self.patch_size) * sx,
                                 (off[:, 1] + self.patch_size) * sy], dim=1) / FEATURE_STRIDE
            yield band.indices, (x, boxes)

    def forward(self, model: nn.Module, inputs: tuple[Tensor, Tensor], *, device: torch.device,
                memory_format: torch.memory_format, amp: ContextManager) -> Tensor:
        """(k, C) features of one band's windows: one trunk pass (under ``amp``), then the
        windows' area-weighted means of the map (float64, outside autocast)."""
        x, boxes = inputs
        with amp:
            fmap = feature_map(model, x.to(device).contiguous(memory_format=memory_format))[0]
        return box_means(fmap, boxes)

    def close(self) -> None:
        if self.slide is not None:
            self.slide.close()
        self.slide = None


def extract_features_fully_conv(
    slide_path: str | os.PathLike[str],
    coords: np.ndarray,
    *,
    patch_level: int,
    patch_size: int,
    encoder: Encoder,
    tile_size: int = 2048,
    margin: int = 64,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    channels_last: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Approximate patch features from one trunk pass per region -> (N, D) float32.

    Args:
        slide_path: the slide; coords: ``(N, 2)`` int level-0 px top-left ``(x, y)``.
        patch_level, patch_size: the grid's level and patch side (px at that level).
        encoder: a CNN encoder with a fully-convolutional form (:func:`supports_fully_conv`);
            its transform's ``Resize``/``Normalize`` give the scale and normalisation.
        tile_size: largest side of one region read, margins included (px at patch_level).
        margin: real context read around each region (px at patch_level).
        device: 'cpu' or 'cuda[:i]'; precision: None/'fp32', 'bf16' or 'fp16' (autocast);
        channels_last: run the trunk channels-last (for bf16 on CPU).

    Returns:
        ``(N, encoder.dim)`` float32 in ``coords`` order (see the module docstring for how
        they differ from the exact per-patch features). N = 0 does not open the slide.

    Raises:
        ConfigError: the encoder has no fully-convolutional form (names the registered ones
            that have); bad precision/device.
        SlideOpenError: the slide cannot be opened.
    """
    if not supports_fully_conv(encoder):
        raise ConfigError(f"encoder '{encoder.name}' has no fully-convolutional form (supported: "
                          f"{', '.join(fully_conv_encoders())}); set fully_convolutional: false")
    source = RegionSource(slide_path, coords, encoder=encoder, patch_level=patch_level,
                          patch_size=patch_size, tile_size=tile_size, margin=margin)
    return encode(source, encoder, device=device, precision=precision, channels_last=channels_last,
                  num_workers=0, progress=progress)
