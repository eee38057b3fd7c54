"""Output writers behind one registry: what a slide's computed numbers become on disk.

:func:`heatmaps.pipeline.run_slide` computes (tissue -> first pass -> fine pass) and, after
each step, hands a :class:`SlideArtifacts` to every registered writer of that stage whose
``enabled(cfg)`` is true. A new output (a QuPath GeoJSON, a viewer manifest) is one new module
that calls :func:`register_writer`, not a new branch in the pipeline.

Stages, in order: ``tissue`` (contours known), ``blockmap`` (first pass scored), ``heatmap``
(fine-pass scores known). The score H5s themselves are the pipeline's results, not writers'.
"""
from __future__ import annotations

from .base import STAGES, WRITERS, SlideArtifacts, Writer, register_writer, run_writers, writers_for
from . import images, qupath, samples, scoremaps  # noqa: F401,E402  (register the built-in writers)
from . import dsa  # noqa: F401,E402  (DSA / HistomicsUI annotation)

__all__ = ["STAGES", "SlideArtifacts", "Writer", "WRITERS", "register_writer", "writers_for", "run_writers"]
