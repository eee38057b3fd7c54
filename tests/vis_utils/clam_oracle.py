"""A slow, obviously-correct description of CLAM's heatmap drawing, for tests only.

This is our own per-patch loop written from the behaviour of CLAM ``visHeatmap`` /
``block_blending`` / ``get_seg_mask`` (not CLAM's code): every patch adds its value into a float64
canvas and a counter, pixels take the mean, patches above the threshold are coloured through the
matplotlib colormap itself, and the result is blended with the slide read in 1024-px blocks.
``render_heatmap`` must reproduce it pixel for pixel.

Also here: :class:`FakeSlide`, an in-memory multi-level slide with the ``wsi_core.Slide`` reading
interface (a level-0 location maps to level pixel ``floor(loc / downsample)``, so CLAM's block
reads at ``i * 1024 * int(ds)`` land a pixel off when ``ds`` is not an integer - as on real slides).
"""
from __future__ import annotations

import math

import cv2
import matplotlib
import numpy as np
from PIL import Image
from scipy.stats import rankdata


class FakeSlide:
    """In-memory pyramid: ``level0`` (h, w, 3) uint8 and INTER_AREA-shrunk levels of given sizes."""

    def __init__(self, level0: np.ndarray, sizes: list[tuple[int, int]], slide_id: str = "fake"):
        self.slide_id = slide_id
        self.levels = [level0] + [cv2.resize(level0, s, interpolation=cv2.INTER_AREA) for s in sizes]
        self.level_dimensions = [(a.shape[1], a.shape[0]) for a in self.levels]
        w0, h0 = self.level_dimensions[0]
        self.level_downsamples = [(w0 / w, h0 / h) for w, h in self.level_dimensions]
        self.level_count = len(self.levels)
        self.reads: list[tuple[tuple[int, int], int, tuple[int, int]]] = []

    def best_level_for_downsample(self, downsample: float) -> int:
        ok = [i for i, d in enumerate(self.level_downsamples) if max(d) <= downsample]
        return ok[-1] if ok else 0

    def read_region(self, location, level, size) -> np.ndarray:
        self.reads.append((tuple(int(v) for v in location), int(level), tuple(int(v) for v in size)))
        img = self.levels[level]
        dsx, dsy = self.level_downsamples[level]
        x, y = math.floor(location[0] / dsx), math.floor(location[1] / dsy)
        w, h = size
        out = np.zeros((h, w, 3), dtype=np.uint8)
        sx0, sy0 = max(x, 0), max(y, 0)
        sx1, sy1 = min(x + w, img.shape[1]), min(y + h, img.shape[0])
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = img[sy0:sy1, sx0:sx1]
        return out


def _seg_mask(contours, region_size, scale, top_left, use_holes):
    w, h = region_size
    mask = np.zeros((h, w), dtype=np.uint8)
    off = (int(-top_left[0] * scale[0]), int(-top_left[1] * scale[1]))
    scaled = []
    for cont, holes in zip(contours.tissue, contours.holes):
        c = (cont * np.array(scale)).astype(np.int32)
        hs = [(hole * np.array(scale)).astype(np.int32) for hole in holes]
        scaled.append((cv2.contourArea(c), c, hs))
    order = sorted(range(len(scaled)), key=lambda i: -scaled[i][0])  # stable, largest first
    for i in order:
        _, c, hs = scaled[i]
        cv2.drawContours(mask, [c], 0, 1, -1, offset=off)
        if use_holes and hs:
            cv2.drawContours(mask, hs, -1, 0, -1, offset=off)
    return mask.astype(bool)


def clam_heatmap(slide, scores, coords, *, patch_size_level0, vis_level, contours, style,
                 convert_to_percentiles, roi=None, base_from_blocks=False) -> np.ndarray:
    """CLAM's drawing as a loop. ``base_from_blocks`` uses the block-read canvas as the base
    image too (our read-once behaviour) instead of CLAM's extra single read."""
    if vis_level < 0:
        vis_level = slide.best_level_for_downsample(32)
    dsx, dsy = slide.level_downsamples[vis_level]
    scale = (1 / dsx, 1 / dsy)
    scores = np.array(scores)
    if scores.ndim == 2:
        scores = scores.flatten()
    coords = np.array(coords)
    thr = 0.0
    if style.binarize:
        thr = 1.0 / len(scores) if style.binary_thresh < 0 else style.binary_thresh
    if roi is not None:
        tl, br = (roi[0], roi[1]), (roi[2], roi[3])
        keep = [i for i in range(len(coords))
                if tl[0] <= coords[i][0] <= br[0] and tl[1] <= coords[i][1] <= br[1]]
        scores, coords = scores[keep], coords[keep] - np.array(tl)
        w = int(br[0] * scale[0]) - int(tl[0] * scale[0])
        h = int(br[1] * scale[1]) - int(tl[1] * scale[1])
    else:
        tl, br = (0, 0), slide.level_dimensions[0]
        w, h = slide.level_dimensions[vis_level]
    pw = math.ceil(patch_size_level0[0] * scale[0])
    ph = math.ceil(patch_size_level0[1] * scale[1])
    cc = [(math.ceil(c[0] * scale[0]), math.ceil(c[1] * scale[1])) for c in coords]
    if convert_to_percentiles:
        scores = rankdata(scores, "average") / len(scores) * 100
    scores = scores / 100  # stays float32 for float32 input, as CLAM's in-place division

    overlay = np.zeros((h, w), dtype=np.float64)
    counter = np.zeros((h, w), dtype=np.uint16)
    for s, (x, y) in zip(scores, cc):
        v = (1.0 if style.binarize else float(s)) if s >= thr else 0.0
        overlay[y:y + ph, x:x + pw] += v
        counter[y:y + ph, x:x + pw] += 1
    nz = counter > 0
    overlay[nz] = overlay[nz] / counter[nz]
    if style.binarize:
        overlay[nz] = np.around(overlay[nz])
    k = (int(pw * (1 - style.overlap)) * 2 + 1, int(ph * (1 - style.overlap)) * 2 + 1)
    if style.blur:
        overlay = cv2.GaussianBlur(overlay, k, 0)
    segment = style.segment and contours is not None
    if segment:
        tissue = _seg_mask(contours, (w, h), scale, tl, style.use_holes)

    blocks = _block_canvas(slide, vis_level, tl, br, (w, h), style.blank_canvas)
    if style.blank_canvas:
        img = np.full((h, w, 3), 255, dtype=np.uint8)
    elif base_from_blocks:
        img = blocks.copy()
    else:
        img = slide.read_region(tl, vis_level, (w, h))
    cmap = matplotlib.colormaps[style.cmap]
    for s, (x, y) in zip(scores, cc):
        if s >= thr:
            colour = (cmap(overlay[y:y + ph, x:x + pw]) * 255)[:, :, :3].astype(np.uint8)
            block = img[y:y + ph, x:x + pw]
            sel = tissue[y:y + ph, x:x + pw] if segment else np.ones(block.shape[:2], bool)
            block[sel] = colour[sel]
    if style.blur:
        img = cv2.GaussianBlur(img, k, 0)
    if style.alpha < 1.0:
        img = _block_blend(img, blocks, slide, vis_level, tl, br, style.alpha)
    if style.custom_downsample > 1:
        cd = style.custom_downsample
        img = np.asarray(Image.fromarray(img).resize((int(w / cd), int(h / cd))))
    return img


def _block_origins(slide, vis_level, tl, br, size):
    dsx, dsy = slide.level_downsamples[vis_level]
    w, h = size
    bw, bh = min(1024, w), min(1024, h)
    for xs in range(tl[0], br[0], bw * int(dsx)):
        for ys in range(tl[1], br[1], bh * int(dsy)):
            xi, yi = int((xs - tl[0]) / int(dsx)), int((ys - tl[1]) / int(dsy))
            xe, ye = min(w, xi + bw), min(h, yi + bh)
            if xe > xi and ye > yi:
                yield (xs, ys), (xi, yi, xe, ye)


def _block_canvas(slide, vis_level, tl, br, size, blank):
    w, h = size
    canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    if not blank:
        for loc, (xi, yi, xe, ye) in _block_origins(slide, vis_level, tl, br, size):
            canvas[yi:ye, xi:xe] = slide.read_region(loc, vis_level, (xe - xi, ye - yi))
    return canvas


def _block_blend(img, blocks, slide, vis_level, tl, br, alpha):
    h, w = img.shape[:2]
    for _, (xi, yi, xe, ye) in _block_origins(slide, vis_level, tl, br, (w, h)):
        img[yi:ye, xi:xe] = cv2.addWeighted(img[yi:ye, xi:xe], alpha, blocks[yi:ye, xi:xe],
                                            1 - alpha, 0)
    return img
