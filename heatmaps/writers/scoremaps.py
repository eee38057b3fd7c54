"""The class score map writer (``heatmap_arguments.score_maps``): attention and class score maps
on the slide's own scale. With ``normalize_across_slides`` the maps wait for every slide of the
run and are drawn by :func:`heatmaps.pipeline.draw_run_score_maps` on one shared scale."""
from __future__ import annotations

import logging
from pathlib import Path

from wsi_core.errors import FeatureFileError

from ..config import HeatmapConfig
from ..scoremaps import Scales, fit_scales, map_classes, read_slide_scores, render_maps
from .base import SlideArtifacts, Writer, register_writer

log = logging.getLogger(__name__)


def draw_score_maps(a: SlideArtifacts, scales: Scales | None = None) -> list[Path]:
    """The attention and class score maps of one slide (its own scale unless ``scales`` is
    given). A fine-pass H5 without raw scores (CLAM's own) gets a warning and no maps."""
    try:
        scores = read_slide_scores(a.fine_h5)
    except FeatureFileError as exc:
        log.warning("%s: no score maps: %s", a.task.slide_id, exc)
        return []
    classes = map_classes(a.cfg, a.pred)
    scales = scales or fit_scales(a.cfg, [scores], classes)
    return render_maps(a.cfg, a.slide, a.contours, scores, out=a.out, patch_size_level0=a.patch_size_level0,
                       classes=classes, scales=scales, fine_h5=a.fine_h5,
                       roi=a.task.roi if a.cfg.heatmap_arguments.use_roi else None)


def _enabled(cfg: HeatmapConfig) -> bool:
    h = cfg.heatmap_arguments
    return h.score_maps and not h.normalize_across_slides


register_writer(Writer("score_maps", "heatmap", _enabled, draw_score_maps))
