"""The project's exception hierarchy.

Every error raised for bad *input* (a missing slide, a broken config, a feature file of the wrong
shape) is a :class:`WsiHeatmapsError` subclass whose message is ONE user-facing line that names the
file / slide / key at fault and says how to fix it. The run loop catches these at the slide
boundary and records the message in the process list's ``status`` column.
"""
from __future__ import annotations

__all__ = [
    "WsiHeatmapsError",
    "SlideOpenError",
    "NoTissueError",
    "RoiError",
    "FeatureFileError",
    "CheckpointError",
    "ConfigError",
    "MissingDependencyError",
]


class WsiHeatmapsError(Exception):
    """Base: a one-line, user-facing message."""


class SlideOpenError(WsiHeatmapsError):
    """A slide file is missing, in a format OpenSlide does not support, or unreadable."""


class NoTissueError(WsiHeatmapsError):
    """Tissue segmentation or the ROI left no tissue / no patches."""


class RoiError(WsiHeatmapsError):
    """The ROI is empty (x2 <= x1 or y2 <= y1) or lies outside the slide."""


class FeatureFileError(WsiHeatmapsError):
    """Features/coords missing, count mismatch, NaN/Inf, or an unreadable feature/contour file."""


class CheckpointError(WsiHeatmapsError):
    """Unknown checkpoint layout, dimension mismatch, or unknown model_type."""


class ConfigError(WsiHeatmapsError):
    """A config or process-list problem."""


class MissingDependencyError(WsiHeatmapsError):
    """A package the task needs is not installed (the light install has no torch: install the full one)."""
