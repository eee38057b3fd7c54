"""Every output file name, in one place, exactly as CLAM's ``create_heatmaps.py`` names them.

Raw dir ``{raw_save_dir}/{save_exp_code}/{label}/{slide_id}/``::

    {slide_id}.h5                      features float32 (N, D), coords int64 (N, 2) level-0 x, y
    {slide_id}.pt                      the same features as a torch tensor
    {slide_id}_blockmap.h5             attention_scores float32 (N, 1) raw logits, coords (N, 2)
    {slide_id}_{overlap}_roi_{True|False}.h5   fine-pass percentiles (M, 1), coords (M, 2)
    {slide_id}_mask.jpg                segmentation preview
    {slide_id}_blockmap.png            coarse blockmap preview
    {slide_id}_tissue.geojson          (wsi-heatmaps) tissue contours, reused on a rerun
    {slide_id}_mask.pkl                CLAM's contours (read when present, never written)

Production dir ``{production_save_dir}/{save_exp_code}/``::

    {label}/{slide_id}_{overlap}_roi_{0|1}_blur_{0|1}_rs_{0|1}_bc_{0|1}_a_{alpha}_l_{vis_level}_bi_{0|1}_{binary_thresh}.{ext}
    {label}/{slide_id}_orig_{vis_level}.{ext}
    sampled_patches/label_{label}_pred_{pred}/{name}/{i}_{slide_id}_x_{x}_y_{y}_a_{percentile:.3f}.png

:func:`write_scores` / :func:`read_scores` hold the layout of the score H5s (blockmap, fine pass,
``_coords.h5``); they need no torch, so a ``--scores`` re-render runs without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wsi_core.errors import FeatureFileError
from wsi_core.io import write_h5

from .config import HeatmapConfig


@dataclass(frozen=True)
class SlideOutputs:
    """The output paths of one slide under one config."""

    slide_id: str
    raw_dir: Path
    production_dir: Path
    exp_production_dir: Path
    overlap: float
    use_roi: bool

    @property
    def features_h5(self) -> Path:
        return self.raw_dir / f"{self.slide_id}.h5"

    @property
    def features_pt(self) -> Path:
        return self.raw_dir / f"{self.slide_id}.pt"

    @property
    def blockmap_h5(self) -> Path:
        return self.raw_dir / f"{self.slide_id}_blockmap.h5"

    def overlap_h5(self, use_roi: bool | None = None) -> Path:
        roi = self.use_roi if use_roi is None else use_roi
        return self.raw_dir / f"{self.slide_id}_{self.overlap}_roi_{roi}.h5"

    @property
    def mask_jpg(self) -> Path:
        return self.raw_dir / f"{self.slide_id}_mask.jpg"

    @property
    def mask_pkl(self) -> Path:
        return self.raw_dir / f"{self.slide_id}_mask.pkl"

    @property
    def contours_geojson(self) -> Path:
        return self.raw_dir / f"{self.slide_id}_tissue.geojson"

    @property
    def blockmap_png(self) -> Path:
        return self.raw_dir / f"{self.slide_id}_blockmap.png"

    def heatmap(self, cfg: HeatmapConfig) -> Path:
        h = cfg.heatmap_arguments
        name = (f"{self.slide_id}_{float(self.overlap)}_roi_{int(h.use_roi)}_blur_{int(h.blur)}"
                f"_rs_{int(h.use_ref_scores)}_bc_{int(h.blank_canvas)}_a_{float(h.alpha)}_l_{int(h.vis_level)}"
                f"_bi_{int(h.binarize)}_{float(h.binary_thresh)}.{h.save_ext}")
        return self.production_dir / name

    def orig(self, vis_level: int, ext: str) -> Path:
        return self.production_dir / f"{self.slide_id}_orig_{int(vis_level)}.{ext}"

    def sample_dir(self, label: Any, pred: int, name: str) -> Path:
        return self.exp_production_dir / "sampled_patches" / f"label_{label}_pred_{pred}" / name

    def sample_png(self, label: Any, pred: int, name: str, rank: int, x: int, y: int, percentile: float) -> Path:
        return self.sample_dir(label, pred, name) / f"{rank}_{self.slide_id}_x_{x}_y_{y}_a_{percentile:.3f}.png"


def slide_outputs(cfg: HeatmapConfig, slide_id: str, grouping: str) -> SlideOutputs:
    """Output paths of ``slide_id`` whose label folder is ``grouping``."""
    e = cfg.exp_arguments
    exp_prod = Path(e.production_save_dir) / e.save_exp_code
    return SlideOutputs(
        slide_id=slide_id,
        raw_dir=Path(e.raw_save_dir) / e.save_exp_code / grouping / slide_id,
        production_dir=exp_prod / grouping,
        exp_production_dir=exp_prod,
        overlap=cfg.patching_arguments.overlap,
        use_roi=cfg.heatmap_arguments.use_roi,
    )


def effective_config_path(cfg: HeatmapConfig) -> Path:
    """Where the effective config is written: ``{raw_save_dir}/{save_exp_code}/config.yaml``."""
    return Path(cfg.exp_arguments.raw_save_dir) / cfg.exp_arguments.save_exp_code / "config.yaml"


def results_csv_path(cfg: HeatmapConfig, process_list: Path | None) -> Path:
    """CLAM's results table: ``heatmaps/results/{process_list stem or save_exp_code}.csv``."""
    stem = process_list.stem if process_list is not None else cfg.exp_arguments.save_exp_code
    return Path(cfg.exp_arguments.results_dir) / f"{stem}.csv"


def write_scores(path: Path, scores: np.ndarray, coords: np.ndarray, attrs: dict | None = None,
                 extra: dict[str, np.ndarray] | None = None) -> None:
    """CLAM's score H5: ``attention_scores`` float32 (N, 1), ``coords`` int64 (N, 2); ``extra``
    datasets (ours: ``attention_raw`` (N, 1), ``class_scores`` (N, C)) ride along."""
    data = {"attention_scores": np.asarray(scores, np.float32).reshape(-1, 1), "coords": np.asarray(coords, np.int64)}
    write_h5(path, {**data, **(extra or {})}, attrs={"/": attrs} if attrs else None)


def read_scores(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(scores (N,) float32, coords (N, 2) int64, attributes of ``coords`` and of the file) of a
    blockmap, overlap or ``_coords.h5`` file.

    Raises:
        FeatureFileError: the file is missing, not HDF5, or lacks either dataset.
    """
    try:
        with h5py.File(path, "r") as f:
            attrs = {**dict(f["coords"].attrs), **dict(f.attrs)}
            return f["attention_scores"][:].reshape(-1), f["coords"][:].astype(np.int64), attrs
    except (OSError, KeyError) as exc:
        raise FeatureFileError(f"{path}: not a score file with 'attention_scores' and 'coords' ({exc})") from None
