"""Colour scales for score maps: which score value is drawn at which end of the colormap.

A :class:`ScoreScale` maps scores (raw attention logits, class probabilities / logits, or CLAM
rank percentiles) linearly onto ``[0, 1]``, the input of a colormap:
``v = clip((s - lo) / (hi - lo), 0, 1)``. ``lo`` and ``hi`` are in score units; scores below ``lo``
are squashed to 0 (the colormap's low end), scores above ``hi`` to 1.

Kinds (Marugoto's high-resolution heatmaps semantics for ``quantile``):

* ``quantile`` (attention) - ``lo, hi = np.quantile(scores, [att_lower_threshold,
  att_upper_threshold])`` (numpy's default linear interpolation) over the scores of **this slide**
  (``source='slide'``) or over the concatenation of **every slide of the run**
  (``source='run'``, ``normalize_across_slides: true``): then one raw score has one colour on
  every slide of the run, so maps are comparable across slides. E.g. ``att_lower_threshold=0.01``
  draws the bottom 1% of attention at the low end, ``att_upper_threshold=0.99`` the top 1% at
  the high end.
* ``quantile`` (class scores, :func:`fit_score_scale`) - centred on ``center`` (chance, ``1/C``
  for probabilities, 0 for logits): ``half = quantile(|s - center|, score_threshold)``,
  ``lo, hi = center -/+ half``; scores beyond that quantile (outliers) are clipped and ``center``
  is drawn at the colormap's middle (the neutral colour of a diverging map such as coolwarm).
* ``percentile`` - the scores already are CLAM rank percentiles (0-100) of their own slide;
  ``lo, hi = 100 * att_lower_threshold, 100 * att_upper_threshold``. Ranks are per slide, so
  these maps are never comparable across slides (``source='slide'`` always).
* ``fixed`` - ``lo, hi`` given by the user (``source='config'``), the same on every slide.

Also here: the threshold checks (one-line :class:`ConfigError` naming the config key) and
:func:`background_mask` (Marugoto's ``mask_threshold``: bright background is not coloured).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import cv2
import numpy as np

from wsi_core.errors import ConfigError, FeatureFileError

from .percentiles import flat_finite

__all__ = [
    "ScoreScale", "SCALE_KINDS", "SCALE_SOURCES", "fit_scale", "run_scale", "fit_score_scale",
    "fixed_scale", "percentile_scale", "check_thresholds", "check_score_threshold",
    "check_mask_threshold", "background_mask",
]

SCALE_KINDS = ("percentile", "quantile", "fixed")
SCALE_SOURCES = ("slide", "run", "config")
QUANTITIES = ("attention", "score")


@dataclass(frozen=True)
class ScoreScale:
    """A linear colour scale: score ``lo`` -> colormap 0, score ``hi`` -> colormap 1 (clipped).

    Attributes:
        kind: ``'quantile'`` | ``'percentile'`` | ``'fixed'`` (see the module docstring).
        lo, hi: score units drawn at colormap 0 and 1 (raw logit, probability, or 0-100
            percentile); ``hi >= lo``. ``hi == lo`` (all scores equal) draws scores below as 0,
            above as 1 and equal as 0.5.
        att_lower_threshold, att_upper_threshold: quantiles in [0, 1] that gave ``lo`` / ``hi``
            (None for ``fixed`` and class-score scales).
        source: ``'slide'`` (fitted on this slide), ``'run'`` (on all slides of the run),
            ``'config'`` (fixed numbers from the config).
        n_slides: slides whose scores were pooled. n_scores: scores pooled (0 when not fitted).
        quantity: ``'attention'`` or ``'score'`` (class evidence).
        center: class scores only: the score drawn at the colormap middle (chance level).
        score_threshold: class scores only: the outlier quantile of ``|s - center|``.

    Raises:
        ValueError: unknown kind / source / quantity, non-finite ``lo``/``hi`` or ``hi < lo``.
    """

    kind: str
    lo: float
    hi: float
    att_lower_threshold: float | None = None
    att_upper_threshold: float | None = None
    source: str = "slide"
    n_slides: int = 1
    n_scores: int = 0
    quantity: str = "attention"
    center: float | None = None
    score_threshold: float | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (("kind", self.kind, SCALE_KINDS),
                                     ("source", self.source, SCALE_SOURCES),
                                     ("quantity", self.quantity, QUANTITIES)):
            if value not in allowed:
                raise ValueError(f"ScoreScale {name} must be one of {allowed}, got {value!r}")
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.hi < self.lo:
            raise ValueError(f"ScoreScale needs finite lo <= hi, got lo={self.lo}, hi={self.hi}")

    def apply(self, scores: object) -> np.ndarray:
        """Scores -> colormap positions.

        Args:
            scores: ``(N,)`` or ``(N, 1)`` finite numbers in this scale's units.

        Returns:
            ``(N,)`` float64 in ``[0, 1]``: ``clip((s - lo) / (hi - lo), 0, 1)`` computed in
            float64, element by element - equal scores give equal values on every slide that
            shares this scale.

        Raises:
            ValueError: non-numeric input or NaN / Inf among the scores.
        """
        s = flat_finite(scores, "scores")
        if self.hi > self.lo:
            out = (s - self.lo) / (self.hi - self.lo)
            return np.clip(out, 0.0, 1.0, out=out)
        return np.where(s > self.lo, 1.0, np.where(s < self.lo, 0.0, 0.5))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able numbers and strings (every field; None where not applicable)."""
        out = asdict(self)
        for k in ("lo", "hi", "att_lower_threshold", "att_upper_threshold", "center", "score_threshold"):
            out[k] = None if out[k] is None else float(out[k])
        out["n_slides"], out["n_scores"] = int(self.n_slides), int(self.n_scores)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScoreScale":
        """Inverse of :meth:`to_dict` (unknown keys are ignored, so extra JSON fields may be there)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: _plain(v) for k, v in data.items() if k in names})

    def describe(self) -> str:
        """One line for titles and logs, e.g. ``'across 3 slides: quantiles 0.01-1 of 20000
        attention scores -> [-2.31, 4.05]'``."""
        where = {"slide": "this slide", "config": "fixed (config)"}.get(
            self.source, f"across {self.n_slides} slide{'s' if self.n_slides != 1 else ''}")
        rng = f"[{self.lo:.4g}, {self.hi:.4g}]"
        if self.kind == "percentile":
            return f"{where}: rank percentiles {self.lo:g}-{self.hi:g}"
        if self.kind == "fixed":
            return f"{where}: {rng}"
        if self.quantity == "score":
            return (f"{where}: score_threshold {self.score_threshold:g} around {self.center:g} "
                    f"of {self.n_scores} scores -> {rng}")
        return (f"{where}: quantiles {self.att_lower_threshold:g}-{self.att_upper_threshold:g} "
                f"of {self.n_scores} attention scores -> {rng}")


def _plain(v: Any) -> Any:
    """numpy scalars / bytes (as read back from HDF5 attributes) -> Python values."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def check_thresholds(lower: float, upper: float) -> None:
    """Validate the attention quantiles.

    Raises:
        ConfigError: either is not a number in [0, 1], or ``lower >= upper``; the message names
            ``heatmap_arguments.att_lower_threshold`` / ``att_upper_threshold``.
    """
    for key, value, example in (("att_lower_threshold", lower, "0.01 (the bottom 1% drawn at the low end)"),
                                ("att_upper_threshold", upper, "0.99 (the top 1% drawn at the high end)")):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"heatmap_arguments.{key} = {value!r} is not a quantile in [0, 1]; "
                              f"use e.g. {example}")
    if float(lower) >= float(upper):
        raise ConfigError(f"heatmap_arguments.att_lower_threshold ({lower}) must be below "
                          f"heatmap_arguments.att_upper_threshold ({upper}); e.g. 0.01 and 1.0")


def check_score_threshold(score_threshold: float) -> None:
    """Raises ConfigError naming ``heatmap_arguments.score_threshold`` unless it is in (0, 1]."""
    t = score_threshold
    if isinstance(t, bool) or not isinstance(t, (int, float, np.number)) or not 0.0 < float(t) <= 1.0:
        raise ConfigError(f"heatmap_arguments.score_threshold = {t!r} is not a quantile in (0, 1]; "
                          "use e.g. 0.95 (the 5% of class scores farthest from chance are clipped)")


def check_mask_threshold(mask_threshold: int | None) -> None:
    """Raises ConfigError naming ``heatmap_arguments.mask_threshold`` unless it is None or an
    integer grey level 0-255."""
    t = mask_threshold
    if t is None:
        return
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= int(t) <= 255:
        raise ConfigError(f"heatmap_arguments.mask_threshold = {t!r} is not a grey level 0-255; "
                          "use e.g. 224 (brighter background is not coloured) or null to colour all tissue")


def _pool(score_arrays: Sequence[object] | np.ndarray) -> tuple[np.ndarray, int]:
    """(all finite scores pooled as float64, number of non-empty slides)."""
    arrays = [score_arrays] if isinstance(score_arrays, np.ndarray) else list(score_arrays)
    flat = [flat_finite(a, "scores") for a in arrays]
    flat = [a for a in flat if a.size]
    if not flat:
        raise FeatureFileError("cannot fit a colour scale: no scores (every slide's bag is empty); "
                               "check the process list and the feature files")
    return np.concatenate(flat), len(flat)


def _source(source: str | None, n_slides: int) -> str:
    if source is None:
        return "run" if n_slides > 1 else "slide"
    if source not in ("slide", "run"):
        raise ValueError(f"a fitted scale's source is 'slide' or 'run', got {source!r}")
    return source


def fit_scale(score_arrays: Sequence[object] | np.ndarray, *, lower: float = 0.0, upper: float = 1.0,
              kind: str = "quantile", source: str | None = None) -> ScoreScale:
    """Fit an attention colour scale on one slide's scores or on every slide's scores pooled.

    Args:
        score_arrays: one ``(N_i,)`` / ``(N_i, 1)`` array per slide (raw attention for
            ``'quantile'``, 0-100 percentiles for ``'percentile'``); a single array is one slide.
        lower, upper: ``att_lower_threshold`` / ``att_upper_threshold`` quantiles in [0, 1].
        kind: ``'quantile'`` (``lo, hi`` = those quantiles of the concatenated scores,
            ``np.quantile`` linear) or ``'percentile'`` (``lo, hi = 100 * lower, 100 * upper``).
        source: ``'slide'`` or ``'run'``; default ``'run'`` when more than one slide has scores.

    Returns:
        The :class:`ScoreScale`.

    Raises:
        ConfigError: bad thresholds (names the config keys).
        FeatureFileError: no scores at all. ValueError: NaN / Inf scores, unknown kind / source.
    """
    check_thresholds(lower, upper)
    pooled, n_slides = _pool(score_arrays)
    if kind == "percentile":
        return ScoreScale("percentile", 100.0 * float(lower), 100.0 * float(upper), float(lower),
                          float(upper), source="slide", n_slides=n_slides, n_scores=pooled.size)
    if kind != "quantile":
        raise ValueError(f"fit_scale kind must be 'quantile' or 'percentile', got {kind!r}")
    lo, hi = (float(v) for v in np.quantile(pooled, [float(lower), float(upper)]))
    return ScoreScale("quantile", lo, max(hi, lo), float(lower), float(upper),
                      source=_source(source, n_slides), n_slides=n_slides, n_scores=pooled.size)


def run_scale(score_arrays: Sequence[object], *, lower: float = 0.0,
              upper: float = 1.0) -> tuple[ScoreScale, str | None]:
    """The one attention scale of a run (``normalize_across_slides: true``).

    Returns:
        ``(scale, warning)``: ``source='run'``; ``warning`` is a line for the log when fewer
        than two slides have scores (the scale is then that slide's own), else None.

    Raises:
        as :func:`fit_scale`.
    """
    scale = fit_scale(score_arrays, lower=lower, upper=upper, kind="quantile", source="run")
    warning = None
    if scale.n_slides < 2:
        warning = ("heatmap_arguments.normalize_across_slides is true but only 1 slide of this run "
                   "has scores; its colour scale is fitted on that slide alone")
    return scale, warning


def fit_score_scale(score_arrays: Sequence[object] | np.ndarray, *, score_threshold: float = 0.95,
                    center: float = 0.5, source: str | None = None) -> ScoreScale:
    """Fit a class-score colour scale centred on chance (Marugoto's ``score_threshold``).

    ``half = np.quantile(|s - center|, score_threshold)`` over the pooled scores;
    ``lo, hi = center - half, center + half``: ``center`` is drawn at the colormap middle and the
    ``1 - score_threshold`` fraction of scores farthest from it is clipped to the ends.

    Args:
        score_arrays: one ``(N_i,)`` array of class evidence per slide (probability or logit).
        score_threshold: quantile in (0, 1]. center: chance level (``1 / n_classes`` for
            probabilities, 0 for logits).
        source: as :func:`fit_scale`.

    Raises:
        ConfigError: ``score_threshold`` outside (0, 1]. FeatureFileError: no scores.
        ValueError: NaN / Inf scores or center.
    """
    check_score_threshold(score_threshold)
    if not math.isfinite(float(center)):
        raise ValueError(f"center must be finite, got {center}")
    pooled, n_slides = _pool(score_arrays)
    half = float(np.quantile(np.abs(pooled - float(center)), float(score_threshold)))
    return ScoreScale("quantile", float(center) - half, float(center) + half, source=_source(source, n_slides),
                      n_slides=n_slides, n_scores=pooled.size, quantity="score", center=float(center),
                      score_threshold=float(score_threshold))


def fixed_scale(lo: float, hi: float, *, quantity: str = "attention") -> ScoreScale:
    """A scale from fixed numbers (``source='config'``): the same colours on every slide.

    Raises:
        ConfigError: ``lo``/``hi`` not finite or ``lo >= hi`` (names ``heatmap_arguments.score_range``).
    """
    ok = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)
             for v in (lo, hi))
    if not ok or float(lo) >= float(hi):
        raise ConfigError(f"heatmap_arguments.score_range = [{lo}, {hi}] must be two finite numbers "
                          "low < high in score units; e.g. [-3, 3] for raw attention logits")
    return ScoreScale("fixed", float(lo), float(hi), source="config", n_slides=0, quantity=quantity)


def percentile_scale(lower: float = 0.0, upper: float = 1.0) -> ScoreScale:
    """The scale of CLAM's per-slide rank percentiles (0-100): ``[100 * lower, 100 * upper]``.

    Raises:
        ConfigError: bad thresholds (names the config keys).
    """
    check_thresholds(lower, upper)
    return ScoreScale("percentile", 100.0 * float(lower), 100.0 * float(upper), float(lower),
                      float(upper), source="slide")


def background_mask(rgb: np.ndarray, mask_threshold: int) -> np.ndarray:
    """Bright background of a slide image (Marugoto's ``mask_threshold``).

    Args:
        rgb: ``(h, w, 3)`` uint8 RGB.
        mask_threshold: grey level 0-255.

    Returns:
        ``(h, w)`` bool, True where the ITU-R 601 luma (``cv2.COLOR_RGB2GRAY``:
        ``0.299 R + 0.587 G + 0.114 B``, rounded) is ``>= mask_threshold``: such pixels are not
        coloured (Marugoto keeps pixels with grey ``< mask_threshold`` as foreground).

    Raises:
        ConfigError: ``mask_threshold`` is not an integer 0-255. ValueError: not (h, w, 3) uint8.
    """
    check_mask_threshold(mask_threshold)
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"background_mask needs an (h, w, 3) uint8 RGB image, got {img.shape} {img.dtype}")
    if img.size == 0:
        return np.zeros(img.shape[:2], dtype=bool)
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY) >= int(mask_threshold)
