"""Synthetic H&E-like slides with a planted lesion and their ground truth (numpy and OpenCV only).

:func:`render_demo_slide` renders level 0 of a slide deterministically from a seed: a few tissue
blobs on white glass (~45 % of the area), eosin-pink stroma with sparse small hematoxylin nuclei,
one planted lesion (basophilic stroma, dense large dark nuclei) well inside the tissue, smooth
shading, luminance grain and a slight blur. The :class:`DemoSlide` it returns carries the truth:
lesion and tissue masks at downsample 16, the lesion's centre and radius, and the pyramid the
slide is meant to be written with (downsamples 1, 4, 16 at 0.5 µm/px). :func:`grid_coords` gives
a tissue grid, :func:`rank_auc` scores a map against the truth.

The demo (``heatmaps.demo``) writes the slide as a pyramidal TIFF and trains its checkpoint on
another seed; the tests use small renderings as slides with a known answer. Never imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .ranks import average_ranks

__all__ = ["DemoSlide", "render_demo_slide", "grid_coords", "box_fraction", "rank_auc",
           "MPP", "DOWNSAMPLES", "MASK_DS"]

MPP = 0.5                    # µm/px at level 0
DOWNSAMPLES = (1, 4, 16)     # pyramid levels the slide is written with
MASK_DS = 16                 # downsample of the masks kept in DemoSlide
_TISSUE_SHARE = 0.45        # share of the slide that is tissue (before small fragments drop)
_LESION_RADIUS = 0.16       # planted lesion radius / short side

_BACKGROUND = np.array([240.0, 239.0, 241.0], np.float32)
_STROMA = np.array([232.0, 166.0, 202.0], np.float32)        # eosin pink
_LESION_STROMA = np.array([200.0, 140.0, 198.0], np.float32)  # basophilic, more purple
_NUCLEUS = np.array([110.0, 72.0, 160.0], np.float32)        # hematoxylin
_LESION_NUCLEUS = np.array([62.0, 34.0, 112.0], np.float32)  # dark, dense


@dataclass(frozen=True)
class DemoSlide:
    """A synthetic slide and its ground truth.

    path: the TIFF (None for an in-memory rendering); size: level-0 (width, height) px;
    lesion_mask / tissue_mask: (h // 16, w // 16) bool at downsample ``mask_downsample`` (16), a
    cell is True when more than half of its level-0 pixels are lesion / tissue;
    lesion: (x, y, radius) level-0 px of the planted lesion's centre and mean radius.
    """

    path: Path | None
    seed: int
    size: tuple[int, int]
    mpp: float
    level_dimensions: tuple[tuple[int, int], ...]
    lesion: tuple[int, int, int]
    lesion_mask: np.ndarray = field(repr=False)
    tissue_mask: np.ndarray = field(repr=False)
    mask_downsample: int = MASK_DS

    def lesion_fraction(self, coords: np.ndarray, *, patch_size: int) -> np.ndarray:
        """(N,) float64 share (0–1) of each level-0 patch ``(x, y)`` top-left covered by lesion."""
        return box_fraction(self.lesion_mask, coords, patch_size, self.mask_downsample)

    def tissue_fraction(self, coords: np.ndarray, *, patch_size: int) -> np.ndarray:
        """(N,) float64 share (0–1) of each level-0 patch covered by tissue."""
        return box_fraction(self.tissue_mask, coords, patch_size, self.mask_downsample)


def box_fraction(mask: np.ndarray, coords: np.ndarray, patch_size: int, ds: int) -> np.ndarray:
    """(N,) float64 mean of a bool ``mask`` at downsample ``ds`` over the level-0 boxes
    ``[x, x + patch_size) x [y, y + patch_size)`` of ``coords`` (N, 2) int64 (integral image,
    no loop; box edges floored to mask cells, empty boxes count as area 1)."""
    c = np.asarray(coords, np.int64).reshape(-1, 2)
    ii = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape
    x0, y0 = np.clip(c[:, 0] // ds, 0, w), np.clip(c[:, 1] // ds, 0, h)
    x1 = np.clip((c[:, 0] + patch_size) // ds, 0, w)
    y1 = np.clip((c[:, 1] + patch_size) // ds, 0, h)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return (ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / area


# --------------------------------------------------------------------------------- rendering
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """(h, w) float32 Gaussian-blurred white noise with unit standard deviation."""
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma,
                         borderType=cv2.BORDER_REFLECT)
    return n / max(float(n.std()), 1e-6)


def _tissue_field(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Coarse field (h, w) float32 and threshold: tissue where field > thr (~45 % of the slide)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = np.zeros(shape, np.float32)
    short = float(min(h, w))
    for _ in range(int(rng.integers(3, 5))):  # a handful of blobs, not a loop over pixels
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
        sy, sx = rng.uniform(0.12, 0.22, size=2) * short
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        f += np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)).astype(np.float32)
    f += 0.18 * _smooth_noise(rng, shape, 0.05 * short) + 0.06 * _smooth_noise(rng, shape, 1.5)
    ramp = np.minimum(np.minimum(yy, h - 1 - yy) / (0.08 * short),
                      np.minimum(xx, w - 1 - xx) / (0.08 * short))
    f -= 2.0 * (1.0 - np.clip(ramp, 0, 1))  # keep tissue off the slide border
    return f, float(np.quantile(f, 1.0 - _TISSUE_SHARE))


def _lesion_field(rng: np.random.Generator, tissue_coarse: np.ndarray, ds: int,
                  lesion: tuple[int, int, int] | None, size: tuple[int, int]
                  ) -> tuple[tuple[int, int, int], np.ndarray]:
    """Pick the lesion (x, y, r) level-0 px and return a signed field at downsample ``ds``."""
    w0, h0 = size
    if lesion is None:
        r = int(_LESION_RADIUS * min(w0, h0))
        dist = cv2.distanceTransform(tissue_coarse.astype(np.uint8), cv2.DIST_L2, 5)
        ok = np.flatnonzero(dist.ravel() >= 0.8 * r / ds)
        k = int(rng.choice(ok)) if ok.size else int(np.argmax(dist))
        cy, cx = divmod(k, tissue_coarse.shape[1])
        lesion = (int((cx + 0.5) * ds), int((cy + 0.5) * ds), r)
    x, y, r = lesion
    h4, w4 = math.ceil(h0 / 4), math.ceil(w0 / 4)
    yy, xx = np.mgrid[0:h4, 0:w4].astype(np.float32) * 4 + 2
    theta = np.arctan2(yy - y, xx - x)
    wobble = sum(a * np.cos(k * theta + p) for k, a, p in
                 zip((2, 3, 5), rng.uniform(0.04, 0.12, 3), rng.uniform(0, 2 * np.pi, 3)))
    return (x, y, r), (r * (1 + wobble) - np.hypot(xx - x, yy - y)).astype(np.float32)


def _nuclei(rng: np.random.Generator, region: np.ndarray, *, px_per_nucleus: float,
            radii: tuple[int, ...]) -> np.ndarray:
    """(h, w) bool: round nuclei (radii in level-0 px) of a Poisson process restricted to region.

    Points are rasterised into an image and dilated by a disc per radius class (vectorised).
    """
    h, w = region.shape
    out = np.zeros((h, w), np.uint8)
    for r in radii:
        n = rng.poisson(h * w / px_per_nucleus / len(radii))
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        keep = region[ys, xs]
        pts = np.zeros((h, w), np.uint8)
        pts[ys[keep], xs[keep]] = 255
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        out |= cv2.dilate(pts, disc)
    return out.astype(bool)


def render_demo_slide(*, seed: int, size: tuple[int, int] = (4096, 3072),
                      lesion: tuple[int, int, int] | None = None
                      ) -> tuple[np.ndarray, DemoSlide]:
    """Render a synthetic H&E-like level 0 in memory, deterministically from ``seed``.

    Args:
        seed: numpy Generator seed; same seed and arguments -> identical pixels.
        size: level-0 (width, height) px, each a multiple of 16.
        lesion: (x, y, radius) level-0 px of the planted lesion, or None to place it (seeded)
            well inside the tissue, radius 16 % of the short side.
    Returns:
        ((h, w, 3) uint8 RGB, DemoSlide with path None).
    Raises:
        ValueError: size not a multiple of 16 or smaller than 512 px.
    """
    w0, h0 = size
    if w0 % MASK_DS or h0 % MASK_DS or min(w0, h0) < 512:
        raise ValueError(f"demo slide size {size}: width and height must be multiples of 16, >= 512")
    rng = np.random.default_rng(seed)
    coarse, thr = _tissue_field(rng, (h0 // MASK_DS, w0 // MASK_DS))
    tissue = cv2.resize(coarse, (w0, h0), interpolation=cv2.INTER_LINEAR) > thr
    lesion, lfield = _lesion_field(rng, coarse > thr, MASK_DS, lesion, size)
    les = (cv2.resize(lfield, (w0, h0), interpolation=cv2.INTER_LINEAR) > 0) & tissue
    normal = tissue & ~les
    nuc = _nuclei(rng, normal, px_per_nucleus=1400.0, radii=(4, 5, 6))
    les_nuc = _nuclei(rng, les, px_per_nucleus=260.0, radii=(7, 9, 11))

    img = np.broadcast_to(_BACKGROUND, (h0, w0, 3)).copy()
    img[normal] = _STROMA
    img[les] = _LESION_STROMA
    shade = cv2.resize(_smooth_noise(rng, (h0 // 8, w0 // 8), 6.0), (w0, h0),
                       interpolation=cv2.INTER_LINEAR)
    img[tissue] += (9.0 * shade[tissue])[:, None]
    img[nuc] = _NUCLEUS
    img[les_nuc] = _LESION_NUCLEUS
    grain = rng.standard_normal((h0, w0), dtype=np.float32)  # luminance grain, 7 in tissue, 1.5 on glass
    img += (np.where(tissue, np.float32(7.0), np.float32(1.5)) * grain)[:, :, None]
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def small(m: np.ndarray) -> np.ndarray:
        return cv2.resize(m.astype(np.float32), (w0 // MASK_DS, h0 // MASK_DS),
                          interpolation=cv2.INTER_AREA) > 0.5

    dims = tuple((w0 // d, h0 // d) for d in DOWNSAMPLES)
    return rgb, DemoSlide(path=None, seed=seed, size=(w0, h0), mpp=MPP, level_dimensions=dims,
                          lesion=lesion, lesion_mask=small(les), tissue_mask=small(tissue))


def grid_coords(demo: DemoSlide, *, patch_size: int = 256, step: int = 256,
                min_tissue: float = 0.5) -> np.ndarray:
    """(N, 2) int64 level-0 top-left (x, y) of a regular grid, kept where tissue share > min_tissue
    (x-major order like CLAM's grids)."""
    w0, h0 = demo.size
    xs = np.arange(0, w0 - patch_size + 1, step)
    ys = np.arange(0, h0 - patch_size + 1, step)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
    return coords[demo.tissue_fraction(coords, patch_size=patch_size) > min_tissue]


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of finite ``scores`` (N,) for bool ``labels`` (N,) by the rank-sum
    (Mann–Whitney U) formula, ties counted half.

    Raises:
        ValueError: one class is absent.
    """
    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = average_ranks(np.asarray(scores, np.float64).ravel())
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
