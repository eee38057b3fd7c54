"""Writing a slide's pictures: the heatmap (one image, or a pyramidal TIFF streamed band by band),
the orig image, the sampled patches, and the rendering style taken from the config."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vis_utils import HeatmapStyle, render_heatmap, sample_patches, save_image
from vis_utils.tiff import check_raster_size, write_pyramidal_tiff
from vis_utils.tiled import render_heatmap_tiff
from wsi_core.slide import Slide

from .config import HeatmapConfig
from .outputs import SlideOutputs
from .process_list import SlideTask


def style(cfg: HeatmapConfig, *, final: bool) -> HeatmapStyle:
    h = cfg.heatmap_arguments
    if not final:   # CLAM's blockmap preview: plain percentiles, no blur/binarize/blank canvas
        return HeatmapStyle(cmap=h.cmap, alpha=h.alpha)
    return HeatmapStyle(cmap=h.cmap, alpha=h.alpha, blur=h.blur, overlap=cfg.patching_arguments.overlap,
                        binarize=h.binarize, binary_thresh=h.binary_thresh, blank_canvas=h.blank_canvas,
                        custom_downsample=h.custom_downsample)


def save_samples(cfg: HeatmapConfig, slide: Slide, task: SlideTask, out: SlideOutputs, scores: np.ndarray,
                 coords: np.ndarray, pred: int) -> int:
    """Top-k / bottom-k / range samples of the blockmap as PNG patches; returns how many."""
    p = cfg.patching_arguments
    n = 0
    for spec in cfg.sample_arguments.samples:
        if not spec.sample:
            continue
        idx, pct = sample_patches(scores, coords, k=spec.k, mode=spec.mode, seed=spec.seed,
                                  score_start=spec.score_start, score_end=spec.score_end)
        for rank, (i, q) in enumerate(zip(idx, pct)):
            x, y = (int(v) for v in coords[i])
            patch = slide.read_region((x, y), p.patch_level, (p.patch_size, p.patch_size))
            save_image(patch, out.sample_png(task.label, pred, spec.name, rank, x, y, float(q)))
            n += 1
    return n


def write_heatmap(slide: Slide, scores: np.ndarray, coords: np.ndarray, path: Path, *, vis_level: int,
                  raw_scores: bool = False, **kw) -> None:
    """Render and save the heatmap: a tiled pyramidal TIFF (band by band, bounded memory, any
    level up to 0) for ``.tiff``/``.tif``, else one PNG/JPEG image (refused when too large)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        render_heatmap_tiff(slide, scores, coords, vis_level=vis_level, out_path=path, raw_scores=raw_scores, **kw)
        return
    level = vis_level if vis_level >= 0 else slide.best_level_for_downsample(32)
    roi = kw.get("roi")
    w, h = slide.level_dimensions[level] if roi is None else \
        (int((roi[2] - roi[0]) / slide.level_downsamples[level][0]), int((roi[3] - roi[1]) / slide.level_downsamples[level][1]))
    check_raster_size(w, h, path.suffix.lstrip("."))
    save_image(render_heatmap(slide, scores, coords, vis_level=vis_level, **kw), path, quality=100)


def save_orig(slide: Slide, level: int, custom_downsample: int, path: Path) -> None:
    """The slide itself at ``level`` (CLAM's ``_orig_`` image). A ``.tiff`` is a pyramidal TIFF
    streamed band by band from the slide (any level, bounded memory), else one image."""
    if path.suffix.lower() in (".tif", ".tiff") and custom_downsample == 1:
        w, h = slide.level_dimensions[level]
        dx, dy = slide.level_downsamples[level]
        mpp = (slide.mpp[0] * dx, slide.mpp[1] * dy) if slide.mpp else None
        # ceil: OpenSlide floors level-0 / downsample, so the band starts exactly at row y0
        write_pyramidal_tiff(path, lambda y0, y1: slide.read_region((0, math.ceil(y0 * dy)), level, (w, y1 - y0)),
                             size=(w, h), mpp=mpp, description=f"{slide.slide_id} at level {level} (wsi-heatmaps orig)")
        return
    w, h = slide.level_dimensions[level]
    check_raster_size(w // custom_downsample, h // custom_downsample, path.suffix.lstrip("."))
    save_image(_orig_image(slide, level, custom_downsample), path, quality=100)


def _orig_image(slide: Slide, level: int, custom_downsample: int) -> np.ndarray:
    """The whole slide at ``level`` (CLAM visWSI view_slide_only), shrunk by custom_downsample."""
    img = slide.read_region((0, 0), level, slide.level_dimensions[level])
    if custom_downsample > 1:
        from PIL import Image

        h, w = img.shape[:2]
        img = np.asarray(Image.fromarray(img).resize((int(w / custom_downsample), int(h / custom_downsample))))
    return img
