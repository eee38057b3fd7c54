"""The files a viewer may serve, fixed at start: URLs carry entry ids, never paths.

Two ways to fill it:

* :meth:`Registry.single` - one slide and its heatmap (a pyramidal TIFF or a score H5).
* :meth:`Registry.from_run` - a heatmap run's raw directory ``RAW_DIR/EXP``: every
  ``{label}/{slide_id}/`` folder's score H5s (files holding ``attention_scores``; found by their
  content, not their names), the slide file named ``slide_id`` in ``slide_dir`` (default: the run's
  ``config.yaml`` ``data_arguments.data_dir``), and the slide's row of the results CSV (label,
  predictions, probabilities). A file inside the run directory is taken only when its real path
  (symlinks resolved) stays inside it. CLAM's fine-pass H5s do not say what they hold: the run's
  ``heatmap_arguments.use_ref_scores`` does (percentiles when true, raw attention when false).
* :meth:`Registry.from_results` - the same from the run's results CSV, whose run directory is
  found beside it (:func:`run_dir_of_results`).

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
import yaml

from vis_utils.normalize import fit_scale
from wsi_core.errors import ConfigError, SlideOpenError
from wsi_core.formats import ATTENTION_SCORES, score_file_kind

from .sources import ScoreSource, SlideSource, TiffHeatmapSource

__all__ = ["Entry", "Registry", "NotRegistered", "TIFF_SUFFIXES", "run_dir_of_results"]

log = logging.getLogger(__name__)
TIFF_SUFFIXES = (".tif", ".tiff")


class NotRegistered(KeyError):
    """An id (or layer) the viewer was not given at start; its one-line message is ``args[0]``."""


@dataclass
class Entry:
    """One slide and its heatmap. ``kind``: ``'tiff'`` | ``'scores'``; ``group``: score files of
    one run that share this name suffix share the run's colour scale; ``info``: label,
    predictions and probabilities from the results CSV (strings and numbers); ``score_kind``:
    what the score file holds when it does not say (``'raw'``, ``'percentile'`` or None)."""

    id: str
    slide_id: str
    slide_path: Path
    heatmap_path: Path
    kind: str
    group: str = ""
    info: dict = field(default_factory=dict)
    score_kind: str | None = None


def _is_score_h5(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return ATTENTION_SCORES in f
    except OSError:
        return False


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base


def _run_config(run: Path) -> dict:
    """The run's ``config.yaml`` (ours and CLAM's ``create_heatmaps.py`` both dump it into
    ``RAW_DIR/EXP``), or ``{}``."""
    cfg = run / "config.yaml"
    try:
        return (yaml.safe_load(cfg.read_text()) or {}) if cfg.is_file() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg}: not readable YAML ({str(exc).splitlines()[0]}); pass --slide-dir DIR") from None


def run_dir_of_results(results_csv: str | os.PathLike[str]) -> Path:
    """The run directory ``RAW_DIR/EXP`` of a results CSV, looked for beside it:

    * ``{dir}/raw/{stem}`` - the seed commands' ``-o`` folder (``results.csv``, ``raw/results/``);
    * ``config.yaml`` of a run ``*/*/`` under the CSV's folder or the two above it, whose
      ``exp_arguments.results_dir`` (CLAM: always ``heatmaps/results``) ends in the CSV's folder
      name and whose process-list stem (else ``save_exp_code``) is the CSV's stem - CLAM's layout
      (``heatmaps/results/`` beside ``heatmaps/heatmap_raw_results/EXP``).

    Raises:
        ConfigError: the CSV does not exist, or no run directory (or more than one) matches.
    """
    csv = Path(results_csv)
    if not csv.is_file():
        raise ConfigError(f"results CSV not found: {csv}")
    seed = csv.parent / "raw" / csv.stem
    if seed.is_dir():
        return seed
    found = []
    roots = [csv.parent, csv.parent.parent, csv.parent.parent.parent]
    for cfg_path in sorted({p.resolve() for r in roots for p in r.glob("*/*/config.yaml")}):
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        exp, data = cfg.get("exp_arguments") or {}, cfg.get("data_arguments") or {}
        stem = Path(str(data["process_list"])).stem if data.get("process_list") else exp.get("save_exp_code")
        if Path(str(exp.get("results_dir", "heatmaps/results"))).name == csv.parent.name and stem == csv.stem:
            found.append(cfg_path.parent)
    if len(found) != 1:
        why = "no run directory" if not found else f"{len(found)} run directories ({', '.join(map(str, found))})"
        raise ConfigError(f"{csv}: {why} found beside it whose config.yaml writes this CSV; "
                          "pass --run RAW_DIR/EXP --results CSV")
    return found[0]


class Registry:
    """Entries by id, and their sources opened once (thread-safe)."""

    def __init__(self, entries: list[Entry], *, patch_size: int | None = None, segment: bool = True) -> None:
        self.entries = {e.id: e for e in entries}
        self.patch_size, self.segment = patch_size, segment
        self._slides: dict[Path, SlideSource] = {}
        self._heatmaps: dict[str, object] = {}
        self._run_scales: dict[tuple, object] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def single(cls, slide: str | os.PathLike[str], heatmap: str | os.PathLike[str], *,
               patch_size: int | None = None, score_kind: str | None = None, segment: bool = True) -> "Registry":
        """One slide and heatmap, opened (and checked) now.

        Raises:
            SlideOpenError, ConfigError, FeatureFileError: one line naming the file and the fix.
        """
        slide, heatmap = Path(slide), Path(heatmap)
        if not heatmap.exists():
            raise ConfigError(f"heatmap not found: {heatmap}; pass a heatmap TIFF or a score H5 with --heatmap")
        kind = "tiff" if heatmap.suffix.lower() in TIFF_SUFFIXES else "scores"
        sid = Path(slide).stem
        reg = cls([Entry(sid, sid, slide, heatmap, kind, score_kind=score_kind)], patch_size=patch_size, segment=segment)
        reg.heatmap(sid)
        return reg

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str], *, slide_dir: str | os.PathLike[str] | None = None,
                 results_csv: str | os.PathLike[str] | None = None, patch_size: int | None = None,
                 score_kind: str | None = None, segment: bool = True) -> "Registry":
        """Every slide of a run (see the module docstring).

        Raises:
            ConfigError: the run directory does not exist, no slide folder is found, or the slide
                directory is unknown (no ``--slide-dir`` and no ``config.yaml``).
        """
        run = Path(run_dir)
        if not run.is_dir():
            raise ConfigError(f"run directory not found: {run}; pass --run RAW_DIR/EXP (raw_save_dir/save_exp_code)")
        cfg = _run_config(run)
        if slide_dir is None:
            data_dir = (cfg.get("data_arguments") or {}).get("data_dir")
            if not data_dir:
                raise ConfigError(f"{run}: no config.yaml naming data_arguments.data_dir; pass --slide-dir DIR")
            slide_dir = Path(data_dir)
        ref = (cfg.get("heatmap_arguments") or {}).get("use_ref_scores")
        ref_kind = None if ref is None else ("percentile" if ref else "raw")     # what the run's fine passes hold

        def kind_of(h5: Path) -> str | None:       # --score-kind first; a blockmap is raw whatever it says
            kind = score_file_kind(h5)
            return None if kind == "blockmap" else score_kind or (ref_kind if kind == "fine_pass" else None)
        slide_dir = Path(slide_dir)
        rows = {}
        if results_csv is not None:
            import pandas as pd           # only for a run with its results table (50 MiB of imports)
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
                                         group=h5.name[len(slide_id):], info=info,
                                         score_kind=kind_of(h5)))
        if not entries:
            raise ConfigError(f"{run}: no {{label}}/{{slide_id}}/ folder with a score H5 and a slide in {slide_dir}")
        return cls(entries, patch_size=patch_size, segment=segment)

    @classmethod
    def from_results(cls, results_csv: str | os.PathLike[str], **kwargs) -> "Registry":
        """:meth:`from_run` of the run that wrote ``results_csv`` (:func:`run_dir_of_results`)."""
        return cls.from_run(run_dir_of_results(results_csv), results_csv=results_csv, **kwargs)

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
                                                      run_scale=self._run_scale_fn(e), score_kind=e.score_kind,
                                                      segment=self.segment)
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
