"""The files a viewer may serve, fixed at start: URLs carry entry ids, never paths.

Two ways to fill it:

* :meth:`Registry.single` - one slide and its heatmap (a pyramidal TIFF or a score H5).
* :meth:`Registry.from_run` - a heatmap run's raw directory ``RAW_DIR/EXP``: every
  ``{label}/{slide_id}/`` folder's score H5s (files holding ``attention_scores``; found by their
  content, not their names), the slide file named ``slide_id`` in ``slide_dir`` (default: the run's
  ``config.yaml`` ``data_arguments.data_dir``), and the slide's row of the results CSV (label,
  predictions, probabilities). A file inside the run directory is taken only when its real path
  (symlinks resolved) stays inside it.

Sources are opened on first use and kept (OpenSlide's own tile cache serves repeats).
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

from vis_utils.normalize import fit_scale
from wsi_core.errors import ConfigError, SlideOpenError
from wsi_core.formats import ATTENTION_SCORES

from .sources import ScoreSource, SlideSource, TiffHeatmapSource

__all__ = ["Entry", "Registry", "NotRegistered", "TIFF_SUFFIXES"]

log = logging.getLogger(__name__)
TIFF_SUFFIXES = (".tif", ".tiff")


class NotRegistered(KeyError):
    """An id (or layer) the viewer was not given at start; its one-line message is ``args[0]``."""


@dataclass
class Entry:
    """One slide and its heatmap. ``kind``: ``'tiff'`` | ``'scores'``; ``group``: score files of
    one run that share this name suffix share the run's colour scale; ``info``: label,
    predictions and probabilities from the results CSV (strings and numbers)."""

    id: str
    slide_id: str
    slide_path: Path
    heatmap_path: Path
    kind: str
    group: str = ""
    info: dict = field(default_factory=dict)


def _is_score_h5(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return ATTENTION_SCORES in f
    except OSError:
        return False


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base


class Registry:
    """Entries by id, and their sources opened once (thread-safe)."""

    def __init__(self, entries: list[Entry], *, patch_size: int | None = None, score_kind: str | None = None) -> None:
        self.entries = {e.id: e for e in entries}
        self.patch_size, self.score_kind = patch_size, score_kind
        self._slides: dict[Path, SlideSource] = {}
        self._heatmaps: dict[str, object] = {}
        self._run_scales: dict[tuple, object] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def single(cls, slide: str | os.PathLike[str], heatmap: str | os.PathLike[str], *,
               patch_size: int | None = None, score_kind: str | None = None) -> "Registry":
        """One slide and heatmap, opened (and checked) now.

        Raises:
            SlideOpenError, ConfigError, FeatureFileError: one line naming the file and the fix.
        """
        slide, heatmap = Path(slide), Path(heatmap)
        if not heatmap.exists():
            raise ConfigError(f"heatmap not found: {heatmap}; pass a heatmap TIFF or a score H5 with --heatmap")
        kind = "tiff" if heatmap.suffix.lower() in TIFF_SUFFIXES else "scores"
        sid = Path(slide).stem
        reg = cls([Entry(sid, sid, slide, heatmap, kind)], patch_size=patch_size, score_kind=score_kind)
        reg.heatmap(sid)
        return reg

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str], *, slide_dir: str | os.PathLike[str] | None = None,
                 results_csv: str | os.PathLike[str] | None = None, patch_size: int | None = None,
                 score_kind: str | None = None) -> "Registry":
        """Every slide of a run (see the module docstring).

        Raises:
            ConfigError: the run directory does not exist, no slide folder is found, or the slide
                directory is unknown (no ``--slide-dir`` and no ``config.yaml``).
        """
        run = Path(run_dir)
        if not run.is_dir():
            raise ConfigError(f"run directory not found: {run}; pass --run RAW_DIR/EXP (raw_save_dir/save_exp_code)")
        if slide_dir is None:
            cfg = run / "config.yaml"
            data_dir = (yaml.safe_load(cfg.read_text()) or {}).get("data_arguments", {}).get("data_dir") \
                if cfg.is_file() else None
            if not data_dir:
                raise ConfigError(f"{run}: no config.yaml naming data_arguments.data_dir; pass --slide-dir DIR")
            slide_dir = Path(data_dir)
        slide_dir = Path(slide_dir)
        rows = {}
        if results_csv is not None:
            table = pd.read_csv(results_csv)
            if "slide_id" not in table.columns:
                raise ConfigError(f"{results_csv}: no slide_id column; pass the run's results CSV")
            keep = [c for c in table.columns if c in ("label", "bag_size", "status")
                    or c.startswith("Pred_") or c.startswith("p_")]
            for _, r in table.iterrows():
                rows[Path(str(r["slide_id"])).stem] = {c: (None if pd.isna(r[c]) else
                                                           (r[c].item() if isinstance(r[c], np.generic) else r[c]))
                                                       for c in keep}
        entries = []
        for folder in sorted(p for p in run.glob("*/*") if p.is_dir()):
            slide_id, label = folder.name, folder.parent.name
            slides = [p for p in slide_dir.glob(f"{slide_id}*") if p.stem == slide_id or p.name == slide_id]
            if not slides:
                log.warning("%s: no slide file named %s in %s; skipped", folder, slide_id, slide_dir)
                continue
            for h5 in sorted(folder.glob("*.h5")):
                if not _inside(h5, run):
                    log.warning("%s: its real path leaves the run directory %s; not served", h5, run)
                    continue
                if _is_score_h5(h5):
                    info = {"label": label, **rows.get(slide_id, {})}
                    entries.append(Entry(f"{slide_id}~{len([e for e in entries if e.slide_id == slide_id])}",
                                         slide_id, sorted(slides)[0], h5, "scores",
                                         group=h5.name[len(slide_id):], info=info))
        if not entries:
            raise ConfigError(f"{run}: no {{label}}/{{slide_id}}/ folder with a score H5 and a slide in {slide_dir}")
        return cls(entries, patch_size=patch_size, score_kind=score_kind)

    # ------------------------------------------------------------------ lookup
    def entry(self, eid: str) -> Entry:
        """Raises NotRegistered (a KeyError, one line) for an id not registered at start."""
        if eid not in self.entries:
            raise NotRegistered(f"no slide {eid!r} is registered in this viewer (it serves only the files named at start)")
        return self.entries[eid]

    def slide(self, eid: str) -> SlideSource:
        e = self.entry(eid)
        with self._lock:
            if e.slide_path not in self._slides:
                self._slides[e.slide_path] = SlideSource(e.slide_path)
            return self._slides[e.slide_path]

    def heatmap(self, eid: str) -> TiffHeatmapSource | ScoreSource:
        e = self.entry(eid)
        with self._lock:
            if eid not in self._heatmaps:
                slide = self.slide(eid)
                if e.kind == "tiff":
                    self._heatmaps[eid] = TiffHeatmapSource(e.heatmap_path, slide)
                else:
                    self._heatmaps[eid] = ScoreSource(e.heatmap_path, slide, patch_size=self.patch_size,
                                                      run_scale=self._run_scale_fn(e), score_kind=self.score_kind)
            return self._heatmaps[eid]

    def _run_scale_fn(self, e: Entry):
        if len({x.slide_id for x in self.entries.values()}) < 2:
            return None
        peers = [x for x in self.entries.values() if x.group == e.group and x.kind == "scores"]

        def fit(lower: float, upper: float):
            key = (e.group, lower, upper)
            with self._lock:
                if key not in self._run_scales:
                    raws = []
                    for p in peers:
                        try:
                            src = self.heatmap(p.id)
                        except (SlideOpenError, ConfigError, OSError) as exc:
                            log.warning("%s: left out of the run scale: %s", p.heatmap_path, exc)
                            continue
                        if src.raw is not None:
                            raws.append(src.raw)
                    self._run_scales[key] = fit_scale(raws, lower=lower, upper=upper, kind="quantile", source="run")
                return self._run_scales[key]
        return fit
