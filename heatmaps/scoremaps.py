"""Class score maps and attention maps on colour scales that can be compared (Marugoto-style).

With ``heatmap_arguments.score_maps: true`` each slide also gets, in its production folder:

* ``{slide_id}_attention.{ext}``: the raw fine-pass attention, scaled linearly between the
  ``att_lower_threshold`` and ``att_upper_threshold`` quantiles (squashed to 0 and 1), ``att_cmap``;
* ``{slide_id}_score_{class}.{ext}``: per-patch class evidence (the model's classifier applied to
  each instance, as a softmax probability) centred on chance (1 / n_classes) and clipped at the
  ``score_threshold`` quantile, ``score_cmap``; with ``shade_by_attention`` each patch's opacity
  is its normalised attention (Marugoto), else ``alpha``;
* beside each image ``{stem}_colorbar.png`` (the scale with its units) and ``{stem}_scale.json``.

The scale is the slide's own, or with ``normalize_across_slides: true`` one scale fitted on every
slide of the run, so the same score gets the same colour on every slide. The numbers of the scale
also go into the fine-pass H5's attributes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vis_utils.colorbar import save_colorbar, save_scale_json, scale_attrs
from vis_utils.images import save_image
from vis_utils.normalize import ScoreScale, fit_scale, fit_score_scale, run_scale
from vis_utils.scoremap import render_score_map
from wsi_core.errors import ConfigError
from wsi_core.formats import read_raw_scores, record_scale_attrs

from .config import HeatmapConfig
from .layout import SlideOutputs, colorbar_path, scale_json_path

log = logging.getLogger(__name__)


@dataclass
class SlideScores:
    """A slide's fine-pass numbers for the maps: coords (M, 2) int64 level-0, raw attention (M,)
    float32 and per-patch class probabilities (M, C) float32."""

    coords: np.ndarray
    attention: np.ndarray
    class_probs: np.ndarray


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (M, C) logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def read_slide_scores(path: Path) -> SlideScores:
    """The raw attention and per-patch class probabilities of a fine-pass H5 written by this tool.

    Raises:
        FeatureFileError: the file has no raw attention (e.g. CLAM's own H5 with calc_heatmap false).
    """
    raw = read_raw_scores(path)
    return SlideScores(raw.coords, raw.attention, softmax(raw.class_logits))


def map_classes(cfg: HeatmapConfig, pred: int) -> list[int]:
    """Class indices that get a score map: ``true_class`` (default: the predicted class) or all."""
    h, names = cfg.heatmap_arguments, cfg.data_arguments.label_dict
    n = cfg.exp_arguments.n_classes
    if h.score_classes == "all":
        return list(range(n))
    if h.true_class is None:
        return [pred]
    if h.true_class in names:
        return [names[h.true_class]]
    if str(h.true_class).isdigit() and int(h.true_class) < n:
        return [int(h.true_class)]
    raise ConfigError(f"heatmap_arguments.true_class '{h.true_class}' is not a class of this model ({', '.join(names) or f'0-{n - 1}'}); use a label_dict name")


@dataclass
class Scales:
    attention: ScoreScale
    scores: dict[int, ScoreScale]


def fit_scales(cfg: HeatmapConfig, slides: list[SlideScores], classes: list[int]) -> Scales:
    """One attention scale and one score scale per class over ``slides`` (one slide = its own)."""
    h = cfg.heatmap_arguments
    atts = [s.attention for s in slides]
    if len(slides) > 1 or h.normalize_across_slides:
        att, warning = run_scale(atts, lower=h.att_lower_threshold, upper=h.att_upper_threshold)
        if warning:
            log.warning("%s", warning)
    else:
        att = fit_scale(atts, lower=h.att_lower_threshold, upper=h.att_upper_threshold)
    chance = 1.0 / max(cfg.exp_arguments.n_classes, 1)
    scores = {c: fit_score_scale([s.class_probs[:, c] for s in slides], score_threshold=h.score_threshold,
                                 center=chance, source="run" if len(slides) > 1 else None) for c in classes}
    return Scales(att, scores)


def render_maps(cfg: HeatmapConfig, slide, contours, scores: SlideScores, *, out: SlideOutputs,
                patch_size_level0: tuple[int, int], classes: list[int], scales: Scales, fine_h5: Path,
                roi: tuple[int, int, int, int] | None = None) -> list[Path]:
    """Draw the attention map and the class score maps of one slide with the given scales, save
    their colour bars and scale JSONs, and record the scales in the fine-pass H5's attributes."""
    h = cfg.heatmap_arguments
    names = {v: k for k, v in cfg.data_arguments.label_dict.items()}
    ext = "png" if h.save_ext in ("tiff", "tif") else h.save_ext
    common = dict(patch_size_level0=patch_size_level0, vis_level=h.vis_level, contours=contours, roi=roi,
                  mask_threshold=h.mask_threshold)
    att01 = scales.attention.apply(scores.attention)
    written = []
    slide_id = out.slide_id
    path = out.class_map(None, "attention", ext)
    save_image(render_score_map(slide, att01, scores.coords, cmap=h.att_cmap, alpha=h.alpha,
                                alpha_key="heatmap_arguments.alpha", **common), path, quality=100)
    written += _legend(path, h.att_cmap, scales.attention, "attention", "raw attention logit", slide_id)
    for c in classes:
        cls = names.get(c, str(c))
        path = out.class_map(cls, "score", ext)
        values = scales.scores[c].apply(scores.class_probs[:, c])
        # Shaded (Marugoto): a patch's opacity is its normalised attention; else the heatmap alpha.
        save_image(render_score_map(slide, values, scores.coords, cmap=h.score_cmap,
                                    alpha=1.0 if h.shade_by_attention else h.alpha,
                                    shade=att01 if h.shade_by_attention else None,
                                    alpha_key="heatmap_arguments.alpha", **common), path, quality=100)
        written += _legend(path, h.score_cmap, scales.scores[c], f"P({cls}) per patch", "probability", slide_id)
    _record_scales(fine_h5, scales, names)
    return written


def _legend(image: Path, cmap: str, scale: ScoreScale, label: str, units: str, slide_id: str) -> list[Path]:
    bar, js = colorbar_path(image), scale_json_path(image)
    save_colorbar(bar, cmap=cmap, scale=scale, label=label, units=units)
    save_scale_json(js, scale, slide_id=slide_id, image=image.name, cmap=cmap, label=label, units=units)
    return [image, bar, js]


def _record_scales(path: Path, scales: Scales, names: dict[int, str]) -> None:
    """The scales into the fine-pass H5's file attributes (``attention_*``, ``score_{class}_*``)."""
    prefixed = {"attention": scale_attrs(scales.attention)}
    prefixed.update({f"score_{names.get(c, c)}": scale_attrs(sc) for c, sc in scales.scores.items()})
    record_scale_attrs(path, prefixed)
