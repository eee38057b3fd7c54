"""The DSA / HistomicsUI writer (``heatmap_arguments.save_dsa``): the fine-pass attention
percentiles (0-100) as a large_image heatmap annotation beside the heatmap (:mod:`wsi_core.dsa`)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from vis_utils import rank_percentiles
from vis_utils.raster import colormap_lut
from wsi_core.dsa import rgba_strings, write_dsa_annotation
from wsi_core.slide import Slide

from ..config import HeatmapConfig
from .base import SlideArtifacts, Writer, register_writer

log = logging.getLogger(__name__)

#: percentiles at which the colour range is sampled from the colormap
RANGE_VALUES = tuple(float(v) for v in np.linspace(0.0, 100.0, 11))


def write_dsa(path: str | os.PathLike[str], slide: Slide, coords: np.ndarray, patch_size_level0: tuple[int, int],
              percentiles: np.ndarray, *, cmap: str, alpha: float, source: str | None = None) -> Path:
    """Write the DSA annotation of ``percentiles`` ``(N,)`` (0-100) at ``coords`` ``(N, 2)`` level-0 px,
    coloured by ``cmap`` sampled at :data:`RANGE_VALUES` with opacity ``alpha``. A slide without mpp
    is written in level-0 px with that said in the annotation and in the log.

    Raises:
        FeatureFileError: no patches or non-finite scores. ConfigError: unknown ``cmap``.
    """
    lut = colormap_lut(cmap)
    idx = np.round(np.asarray(RANGE_VALUES) / 100.0 * (len(lut) - 1)).astype(int)
    if slide.mpp is None:
        log.warning("%s: the slide records no mpp; the DSA annotation is in level-0 px with no µm scale",
                    slide.slide_id)
    return write_dsa_annotation(path, coords, patch_size_level0, percentiles, name=f"attention {slide.slide_id}",
                                mpp=slide.mpp, colors=rgba_strings(lut[idx], alpha), range_values=RANGE_VALUES,
                                source=source)


def _write(a: SlideArtifacts) -> list[Path]:
    h = a.cfg.heatmap_arguments
    pct = a.fine_scores if h.use_ref_scores else rank_percentiles(a.fine_scores)
    return [write_dsa(a.out.dsa_annotation(), a.slide, a.fine_coords, a.patch_size_level0, pct, cmap=h.cmap,
                      alpha=h.alpha, source=None if a.fine_h5 is None else a.fine_h5.name)]


def _enabled(cfg: HeatmapConfig) -> bool:
    return cfg.heatmap_arguments.save_dsa


register_writer(Writer("dsa_annotation", "heatmap", _enabled, _write))
