"""The writer registry: :class:`Writer`, :class:`SlideArtifacts` and the stages (see the package)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from vis_utils.heatmap import read_canvas
from wsi_core.slide import Slide
from wsi_core.tissue import TissueContours

from ..config import HeatmapConfig
from ..layout import SlideOutputs
from ..process_list import SlideTask

__all__ = ["STAGES", "SlideArtifacts", "Writer", "WRITERS", "register_writer", "writers_for", "run_writers"]

STAGES = ("tissue", "blockmap", "heatmap")
LEVEL_IMAGE_MAX_PX = 1 << 25     # levels up to 32 Mpx (96 MiB RGB) are read once per slide for its pictures


@dataclass
class SlideArtifacts:
    """A slide's computed numbers, filled in stage by stage.

    ``contours``: tissue (level-0 px), None when the provided bag is the tissue; ``seg_vis_level`` / ``orig_level``: resolved levels;
    ``block_scores`` (N,) float32 raw attention of the bag at ``block_coords`` (N, 2) int64
    level-0 px; ``pred`` / ``probs`` (C,) the bag's prediction; ``patch_size_level0`` one patch's
    level-0 footprint ``(w, h)``; ``fine_h5`` the fine-pass score file and ``fine_scores`` (M,) /
    ``fine_coords`` (M, 2) read from it (percentiles with ``use_ref_scores``, else raw).
    """

    cfg: HeatmapConfig
    slide: Slide
    task: SlideTask
    out: SlideOutputs
    contours: TissueContours | None
    seg_vis_level: int
    orig_level: int
    block_scores: np.ndarray | None = None
    block_coords: np.ndarray | None = None
    pred: int = 0
    probs: np.ndarray | None = None
    patch_size_level0: tuple[int, int] = (0, 0)
    fine_h5: Path | None = None
    fine_scores: np.ndarray | None = None
    fine_coords: np.ndarray | None = None
    written: list[Path] = field(default_factory=list)
    _levels: dict = field(default_factory=dict, repr=False)

    def level_image(self, level: int) -> np.ndarray | None:
        """The whole slide at ``level`` ``(h, w, 3)`` uint8, read once for every picture of this
        slide (preview, heatmap, orig), or None when it is not kept: a level over
        ``LEVEL_IMAGE_MAX_PX`` or with a non-integer downsample (where CLAM's block reads and one
        read differ by a sub-pixel shift). Read in CLAM's 1024-px blocks, in threads
        (``vis_utils.heatmap.read_canvas``: the same pixels as one read at integer downsamples)."""
        if level not in self._levels:
            w, h = self.slide.level_dimensions[level]
            integer = all(float(d).is_integer() for d in self.slide.level_downsamples[level])
            self._levels[level] = read_canvas(self.slide, vis_level=level, top_left=(0, 0), region_size=(w, h)) \
                if integer and w * h <= LEVEL_IMAGE_MAX_PX else None
        return self._levels[level]


@dataclass(frozen=True)
class Writer:
    """One output: ``write(artifacts)`` at ``stage`` when ``enabled(cfg)``; returns the paths written."""

    name: str
    stage: str
    enabled: Callable[[HeatmapConfig], bool]
    write: Callable[[SlideArtifacts], list[Path]]


WRITERS: dict[str, Writer] = {}


def register_writer(writer: Writer) -> Writer:
    """Add ``writer`` to the registry (writers of a stage run in registration order).

    Raises:
        ValueError: unknown stage or a name registered twice.
    """
    if writer.stage not in STAGES:
        raise ValueError(f"writer {writer.name}: stage must be one of {STAGES}, got {writer.stage!r}")
    if writer.name in WRITERS:
        raise ValueError(f"writer {writer.name} is registered twice")
    WRITERS[writer.name] = writer
    return writer


def writers_for(stage: str, cfg: HeatmapConfig) -> list[Writer]:
    """The enabled writers of ``stage``, in registration order."""
    return [w for w in WRITERS.values() if w.stage == stage and w.enabled(cfg)]


def run_writers(stage: str, artifacts: SlideArtifacts) -> list[Path]:
    """Run every enabled writer of ``stage``; returns (and records) the paths written."""
    paths: list[Path] = []
    for w in writers_for(stage, artifacts.cfg):
        paths += w.write(artifacts)
    artifacts.written += paths
    return paths

