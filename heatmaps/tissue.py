"""A slide's tissue and patch grids: CLAM's contours (a ``_mask.pkl`` found in the raw dir, our
saved GeoJSON, or a fresh segmentation) - or, when the slide has a provided bag and segmentation
finds nothing (or cannot run: an unreadable ``seg_level``, a fluorescence slide), the bag itself:
the union of its patch footprints is the tissue and the heatmap colours every covered pixel.

With a provided bag the fine pass is always laid on the bag's own lattice over its footprint
(:func:`wsi_core.patching.bag_grid`): it covers what the model saw, and at overlap 0 it is the bag
(CLAM lays it on its contours, which our segmentation need not reproduce)."""
from __future__ import annotations

import logging

import numpy as np

from wsi_core.errors import ConfigError, NoTissueError
from wsi_core.levels import patch_footprint_level0
from wsi_core.patching import bag_grid, patch_grid
from wsi_core.slide import Slide
from wsi_core.tissue import TissueContours, load_clam_mask_pkl, load_contours_geojson, save_contours_geojson, segment_tissue

from .config import HeatmapConfig
from .layout import SlideOutputs
from .process_list import SlideTask

__all__ = ["slide_tissue", "grid", "segmentation_properties"]

log = logging.getLogger(__name__)


def segmentation_properties(task: SlideTask) -> dict:
    """The segmentation parameters saved with the contours (a rerun reuses them only if equal)."""
    s = task.seg_params
    return {"slide_id": task.slide_id, "segmentation": {
        "seg_level": s.seg_level, "sthresh": s.sthresh, "mthresh": s.mthresh, "close": s.close,
        "use_otsu": bool(s.use_otsu), "keep_ids": list(s.keep_ids), "exclude_ids": list(s.exclude_ids),
        "a_t": float(s.a_t), "a_h": float(s.a_h), "max_n_holes": s.max_n_holes}}


def slide_tissue(slide: Slide, task: SlideTask, out: SlideOutputs, *, force: bool,
                 has_bag: bool) -> TissueContours | None:
    """Tissue contours (level-0 px): CLAM's ``_mask.pkl`` when present in the raw dir, else our
    GeoJSON when made with the same parameters, else segment and save the GeoJSON.

    Returns None - the bag is the tissue - when ``has_bag`` and segmentation finds no tissue or
    cannot run (a warning says so).

    Raises:
        NoTissueError, ConfigError: segmentation failed and the slide has no provided bag.
    """
    if out.mask_pkl.is_file() and not force:
        log.debug("%s: using CLAM contours %s", task.slide_id, out.mask_pkl)
        return load_clam_mask_pkl(out.mask_pkl)
    params = segmentation_properties(task)
    if out.contours_geojson.is_file() and not force:
        contours, props = load_contours_geojson(out.contours_geojson)
        if props.get("segmentation") == params["segmentation"]:
            return contours
    try:
        contours = segment_tissue(slide, task.seg_params)
    except (NoTissueError, ConfigError) as exc:
        if not has_bag:
            raise
        log.warning("%s: %s; the provided bag is the tissue: the heatmap covers its patches", task.slide_id, exc)
        return None
    save_contours_geojson(contours, out.contours_geojson, properties=params)
    return contours


def grid(cfg: HeatmapConfig, slide: Slide, contours: TissueContours | None, *, step: int,
         roi: tuple[int, int, int, int] | None, bag_coords: np.ndarray | None = None) -> np.ndarray:
    """Patch coords (N, 2) int64 level-0 of one pass with ``step`` px at ``patch_level``: on a
    provided bag (``bag_coords``) its own lattice over its footprint, so the fine pass covers what
    the model saw and reuses every bag patch it can; else CLAM's tissue test on ``contours``."""
    p = cfg.patching_arguments
    if bag_coords is not None:
        footprint = patch_footprint_level0(slide, patch_size=p.patch_size, patch_level=p.patch_level,
                                           custom_downsample=p.custom_downsample)
        step0 = int(step * p.custom_downsample * int(slide.level_downsamples[p.patch_level][0]))
        return bag_grid(bag_coords, footprint=footprint, step=step0,
                        use_center_shift=cfg.heatmap_arguments.use_center_shift, roi=roi)
    return patch_grid(contours, level_dimensions=slide.level_dimensions, level_downsamples=slide.level_downsamples,
                      patch_level=p.patch_level, patch_size=p.patch_size, step_size=step,
                      use_center_shift=cfg.heatmap_arguments.use_center_shift, roi=roi,
                      custom_downsample=p.custom_downsample)
