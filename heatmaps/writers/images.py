"""The picture writers: segmentation preview, blockmap preview, the heatmap (one image, or a
pyramidal TIFF streamed band by band), and the orig image; plus the rendering style of a config."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from vis_utils import HeatmapStyle, render_heatmap, save_image
from vis_utils.tiff import check_raster_size, write_pyramidal_tiff
from vis_utils.tiled import render_heatmap_tiff
from wsi_core.io import atomic_path
from wsi_core.levels import region_size_at_level, resolve_level
from wsi_core.slide import Slide
from wsi_core.tissue import TissueContours, draw_segmentation

from ..config import HeatmapConfig
from ..layout import scores_tiff_path, style_json_path
from .base import SlideArtifacts, Writer, register_writer

TIFF_EXTS = ("tiff", "tif")


def style(cfg: HeatmapConfig, *, final: bool) -> HeatmapStyle:
    """The rendering style of a config: the final heatmap's, or CLAM's blockmap preview (plain
    percentiles, no blur / binarize / blank canvas)."""
    h = cfg.heatmap_arguments
    if not final:
        return HeatmapStyle(cmap=h.cmap, alpha=h.alpha)
    return HeatmapStyle(cmap=h.cmap, alpha=h.alpha, blur=h.blur, overlap=cfg.patching_arguments.overlap,
                        binarize=h.binarize, binary_thresh=h.binary_thresh, blank_canvas=h.blank_canvas,
                        custom_downsample=h.custom_downsample)


def write_heatmap(slide: Slide, scores: np.ndarray, coords: np.ndarray, path: Path, *, vis_level: int,
                  raw_scores: Path | None = None, empty_background: bool = False, **kw) -> None:
    """Render and save a heatmap: a tiled pyramidal TIFF (band by band, bounded memory, any level
    up to 0) for ``.tiff``/``.tif``, else one PNG/JPEG image (refused when too large).

    ``raw_scores``: TIFF only, where to write the grayscale score map too. ``empty_background``:
    TIFF only, tiles without heatmap colour stored empty (see
    :func:`vis_utils.tiled.render_heatmap_tiff`). ``**kw``: as :func:`vis_utils.render_heatmap`.

    Raises:
        ConfigError: a PNG/JPEG larger than the format allows (use save_ext: tiff).
    """
    if path.suffix.lower().lstrip(".") in TIFF_EXTS:
        render_heatmap_tiff(slide, scores, coords, vis_level=vis_level, out_path=path, raw_scores=raw_scores,
                            empty_background=empty_background, **kw)
        return
    level = resolve_level(slide, vis_level)
    w, h = region_size_at_level(slide, level, kw.get("roi"))
    check_raster_size(w, h, path.suffix.lstrip("."))
    save_image(render_heatmap(slide, scores, coords, vis_level=vis_level, **kw), path, quality=100)


def save_orig(slide: Slide, level: int, custom_downsample: int, path: Path, *, image: np.ndarray | None = None) -> None:
    """The slide itself at ``level`` (CLAM's ``_orig_`` image). A ``.tiff`` is a pyramidal TIFF
    streamed band by band from the slide (any level, bounded memory), else one image (``image``:
    the whole level already read, else read here)."""
    if path.suffix.lower().lstrip(".") in TIFF_EXTS and custom_downsample == 1:
        w, h = slide.level_dimensions[level]
        dx, dy = slide.level_downsamples[level]
        mpp = (slide.mpp[0] * dx, slide.mpp[1] * dy) if slide.mpp else None
        # ceil: OpenSlide floors level-0 / downsample, so the band starts exactly at row y0
        write_pyramidal_tiff(path, lambda y0, y1: slide.read_region((0, math.ceil(y0 * dy)), level, (w, y1 - y0)),
                             size=(w, h), mpp=mpp, description=f"{slide.slide_id} at level {level} (wsi-heatmaps orig)")
        return
    w, h = slide.level_dimensions[level]
    check_raster_size(w // custom_downsample, h // custom_downsample, path.suffix.lstrip("."))
    save_image(_orig_image(slide, level, custom_downsample, image), path, quality=100)


def _orig_image(slide: Slide, level: int, custom_downsample: int, image: np.ndarray | None = None) -> np.ndarray:
    """The whole slide at ``level`` (CLAM visWSI view_slide_only), shrunk by custom_downsample."""
    img = image if image is not None else slide.read_region((0, 0), level, slide.level_dimensions[level])
    if custom_downsample > 1:
        from PIL import Image

        h, w = img.shape[:2]
        img = np.asarray(Image.fromarray(img).resize((int(w / custom_downsample), int(h / custom_downsample))))
    return img


# ------------------------------------------------------------------------------- the writers


def _mask(a: SlideArtifacts) -> list[Path]:
    contours = a.contours if a.contours is not None else TissueContours([], [])   # the bag is the tissue
    img = draw_segmentation(a.slide, contours, vis_level=a.seg_vis_level, line_thickness=a.task.line_thickness)
    save_image(img, a.out.mask_jpg, quality=75)
    return [a.out.mask_jpg]


def _blockmap_preview(a: SlideArtifacts) -> list[Path]:
    save_image(render_heatmap(a.slide, a.block_scores, a.block_coords, patch_size_level0=a.patch_size_level0,
                              vis_level=-1, contours=a.contours, style=style(a.cfg, final=False),
                              convert_to_percentiles=True, canvas=a.level_image(resolve_level(a.slide, -1))),
               a.out.blockmap_png)
    return [a.out.blockmap_png]


def _heatmap(a: SlideArtifacts) -> list[Path]:
    h = a.cfg.heatmap_arguments
    path = a.out.heatmap(a.cfg)
    raw = scores_tiff_path(path) if h.raw_scores and h.save_ext in TIFF_EXTS else None
    st = style(a.cfg, final=True)
    roi = a.task.roi if h.use_roi else None
    whole = (roi is None and path.suffix.lower().lstrip(".") not in TIFF_EXTS and h.custom_downsample == 1
             and not st.blank_canvas)         # a blank canvas reads no slide: do not read the level for it
    write_heatmap(a.slide, a.fine_scores, a.fine_coords, path, patch_size_level0=a.patch_size_level0,
                  vis_level=h.vis_level, contours=a.contours, style=st,
                  convert_to_percentiles=not h.use_ref_scores, roi=roi,
                  raw_scores=raw, empty_background=h.tiff_background == "empty",
                  **({"canvas": a.level_image(resolve_level(a.slide, h.vis_level))} if whole else {}))
    record = {"image": path.name, "fine_pass": a.fine_h5.name if a.fine_h5 else None, "vis_level": h.vis_level,
              "scores": "percentile" if h.use_ref_scores else "raw, ranked into percentiles",
              "roi": list(a.task.roi) if (h.use_roi and a.task.roi) else None, **dataclasses.asdict(st)}
    js = style_json_path(path)
    with atomic_path(js) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
    return [path, js] + ([raw] if raw else [])


def _orig(a: SlideArtifacts) -> list[Path]:
    h = a.cfg.heatmap_arguments
    path = a.out.orig(a.orig_level, h.save_ext)
    tiff = path.suffix.lower().lstrip(".") in TIFF_EXTS
    save_orig(a.slide, a.orig_level, h.custom_downsample, path, image=None if tiff else a.level_image(a.orig_level))
    return [path]


register_writer(Writer("mask", "tissue", lambda cfg: True, _mask))
register_writer(Writer("blockmap_preview", "blockmap", lambda cfg: True, _blockmap_preview))
register_writer(Writer("heatmap", "heatmap", lambda cfg: True, _heatmap))
register_writer(Writer("orig", "blockmap", lambda cfg: cfg.heatmap_arguments.save_orig, _orig))
