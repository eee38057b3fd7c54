"""The QuPath writer (``heatmap_arguments.save_geojson``): the fine-pass patches as QuPath tiles
with their measurements (and a class from ``geojson_threshold``), and the tissue as annotations, beside the heatmap (:mod:`wsi_core.qupath`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vis_utils import rank_percentiles
from wsi_core.formats import ATTENTION_RAW, has_raw_scores, read_raw_scores
from wsi_core.qupath import write_qupath_annotations, write_qupath_tiles

from ..config import HeatmapConfig
from ..scoremaps import softmax
from .base import SlideArtifacts, Writer, register_writer


def tile_measurements(a: SlideArtifacts) -> dict[str, np.ndarray]:
    """``attention_percentile`` (0-100) of every fine-pass patch; with this tool's raw scores also
    ``attention_raw`` and ``p_{class}`` (per-patch class probability, softmax of the class logits)."""
    h = a.cfg.heatmap_arguments
    pct = a.fine_scores if h.use_ref_scores else rank_percentiles(a.fine_scores)
    out = {"attention_percentile": np.asarray(pct, np.float64)}
    if a.fine_h5 is not None and has_raw_scores(a.fine_h5):
        raw = read_raw_scores(a.fine_h5)
        out[ATTENTION_RAW] = raw.attention.astype(np.float64)   # the measurement is named as the dataset
        names = {v: k for k, v in a.cfg.data_arguments.label_dict.items()}
        probs = softmax(raw.class_logits)
        for c in range(probs.shape[1]):
            out[f"p_{names.get(c, c)}"] = probs[:, c].astype(np.float64)
    return out


#: QuPath classes of the tiles at / below ``heatmap_arguments.geojson_threshold``
HIGH_ATTENTION, LOW_ATTENTION = "High attention", "Low attention"


def tile_classes(percentiles: np.ndarray, threshold: float | None) -> list[str] | None:
    """Each tile's QuPath class: :data:`HIGH_ATTENTION` where its attention percentile (0-100) is
    ``>= threshold``, else :data:`LOW_ATTENTION`; None (tiles unclassified) without a threshold."""
    if threshold is None:
        return None
    return np.where(np.asarray(percentiles) >= threshold, HIGH_ATTENTION, LOW_ATTENTION).tolist()


def _write(a: SlideArtifacts) -> list[Path]:
    h = a.cfg.heatmap_arguments
    gz = h.geojson_gzip
    measurements = tile_measurements(a)
    tiles = write_qupath_tiles(a.out.qupath_tiles(gzipped=gz), a.fine_coords, a.patch_size_level0, measurements,
                               classification=tile_classes(measurements["attention_percentile"], h.geojson_threshold))
    written = [tiles]
    if a.contours is not None:
        written.append(write_qupath_annotations(a.out.qupath_tissue(gzipped=gz), a.contours))
    return written


def _enabled(cfg: HeatmapConfig) -> bool:
    return cfg.heatmap_arguments.save_geojson


register_writer(Writer("qupath_geojson", "heatmap", _enabled, _write))
