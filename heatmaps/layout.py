"""Every output path and file name, in one place; CLAM's names exactly as CLAM's ``create_heatmaps.py`` writes them.

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

Beside them (wsi-heatmaps)::

    {raw_save_dir}/{save_exp_code}/config.yaml                  the effective config
    {raw_save_dir}/{save_exp_code}/process_list_autogen.csv     the process list built from data_dir
    {raw dir}/{slide_id}_state.json                             per-slide state (status, numbers)
    {raw dir}/{slide_id}.lock                                   the claim of the worker computing it
    {raw_save_dir}/{save_exp_code}/runs/{run_id}.json           the config hash the workers of a run share
    {results_dir}/{process_list stem}.csv.lock                  held while a worker writes the results table
    {production dir}/{slide_id}_attention.{ext}, {slide_id}_score_{class}.{ext}
                                      score maps; ``{stem}_colorbar.png`` and ``{stem}_scale.json`` beside each
    {results_dir}/{process_list stem}.csv                        the results table
    {production dir}/{slide_id}_dsa_annotation.json   DSA / HistomicsUI heatmap annotation (save_dsa)
    {output stem}_coords.h5, {output stem}_scores.tif            beside a high-resolution heatmap
    {output stem}_dsa_annotation.json                            beside it with --dsa
    {output stem}_work/                                          its intermediate files (reused by a rerun)

The seed commands (``generate-heatmaps``, ``create-heatmaps-marugoto``) put one run under ``-o``/``--output_dir``
(:func:`seed_exp_arguments`)::

    {output_dir}/results.csv                 the results table
    {output_dir}/results/{label}/...         heatmaps (and score maps) as in the production dir
    {output_dir}/raw/results/{label}/{slide_id}/...   the raw dir (blockmaps, fine-pass H5, contours)

The score files' names and the layouts *inside* the H5 files live in :mod:`wsi_core.formats`
(the torch-free viewer tells them apart too), the contour files' names in :mod:`wsi_core.tissue`
(``contour_files``); this module builds every path from them.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_core.formats import BLOCKMAP_SUFFIX, COORDS_SUFFIX, fine_pass_name
from wsi_core.tissue import contour_files

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
        return self.raw_dir / f"{self.slide_id}{BLOCKMAP_SUFFIX}"

    def overlap_h5(self, use_roi: bool | None = None) -> Path:
        roi = self.use_roi if use_roi is None else use_roi
        return self.raw_dir / fine_pass_name(self.slide_id, self.overlap, roi)

    @property
    def mask_jpg(self) -> Path:
        return self.raw_dir / f"{self.slide_id}_mask.jpg"

    @property
    def mask_pkl(self) -> Path:
        return contour_files(self.blockmap_h5, self.slide_id)[1]

    @property
    def contours_geojson(self) -> Path:
        return contour_files(self.blockmap_h5, self.slide_id)[0]

    @property
    def blockmap_png(self) -> Path:
        return self.raw_dir / f"{self.slide_id}_blockmap.png"

    def heatmap(self, cfg: HeatmapConfig) -> Path:
        """CLAM's heatmap name; style keys CLAM's name lacks join it when not at their default
        (``_cmap_{cmap}``, ``_cd_{custom_downsample}``), so an image of another style is never
        overwritten."""
        h = cfg.heatmap_arguments
        extra = (f"_cmap_{h.cmap}" if h.cmap != "jet" else "") + \
            (f"_cd_{int(h.custom_downsample)}" if int(h.custom_downsample) != 1 else "")
        name = (f"{self.slide_id}_{float(self.overlap)}_roi_{int(h.use_roi)}_blur_{int(h.blur)}"
                f"_rs_{int(h.use_ref_scores)}_bc_{int(h.blank_canvas)}_a_{float(h.alpha)}_l_{int(h.vis_level)}"
                f"_bi_{int(h.binarize)}_{float(h.binary_thresh)}{extra}.{h.save_ext}")
        return self.production_dir / name

    def orig(self, vis_level: int, ext: str) -> Path:
        return self.production_dir / f"{self.slide_id}_orig_{int(vis_level)}.{ext}"

    def sample_dir(self, label: Any, pred: int, name: str) -> Path:
        return self.exp_production_dir / "sampled_patches" / f"label_{label}_pred_{pred}" / name

    def sample_png(self, label: Any, pred: int, name: str, rank: int, x: int, y: int, percentile: float) -> Path:
        return self.sample_dir(label, pred, name) / f"{rank}_{self.slide_id}_x_{x}_y_{y}_a_{percentile:.3f}.png"

    def qupath_tiles(self, *, gzipped: bool = False) -> Path:
        """The fine-pass patches as QuPath tiles: ``{slide_id}_tiles.geojson[.gz]`` (production dir)."""
        return self.production_dir / f"{self.slide_id}_tiles.geojson{'.gz' if gzipped else ''}"

    def qupath_tissue(self, *, gzipped: bool = False) -> Path:
        """The tissue as QuPath annotations: ``{slide_id}_tissue_annotations.geojson[.gz]``."""
        return self.production_dir / f"{self.slide_id}_tissue_annotations.geojson{'.gz' if gzipped else ''}"

    def dsa_annotation(self) -> Path:
        """The fine-pass scores as a DSA / HistomicsUI heatmap annotation: ``{slide_id}_dsa_annotation.json``."""
        return self.production_dir / f"{self.slide_id}_dsa_annotation.json"

    @property
    def state_json(self) -> Path:
        """Per-slide state (status, numbers) beside the raw outputs."""
        return self.raw_dir / f"{self.slide_id}_state.json"

    def repeat_state_json(self, k: int) -> Path:
        """The state of the ``k``-th repeat (k >= 1) of this slide in one process list (another
        row with the same slide id and label, e.g. other features): ``{slide_id}_repeat{k}_state.json``."""
        return self.state_json if k == 0 else self.raw_dir / f"{self.slide_id}_repeat{int(k)}_state.json"

    @property
    def claim_lock(self) -> Path:
        """The slide's claim while a worker computes it (:mod:`heatmaps.claims`), beside the raw outputs."""
        return self.raw_dir / f"{self.slide_id}.lock"

    def temp_files(self, pid: int) -> list[Path]:
        """Temporary files (``*.tmp-{pid}``, :func:`wsi_core.io.atomic_path`) a worker with ``pid``
        left for this slide when it was killed: in its raw folder, beside its heatmaps, among the
        sampled patches."""
        tail = f".tmp-{int(pid)}"
        found = [p for p in self.raw_dir.glob(f"*{tail}")]
        found += [p for p in self.production_dir.glob(f"{self.slide_id}*{tail}")]
        found += [p for p in (self.exp_production_dir / "sampled_patches").glob(f"*/*/*_{self.slide_id}_x_*{tail}")]
        return found

    def class_map(self, cls_name: str | None, kind: str, ext: str) -> Path:
        """A score map of this slide in the production dir (see :func:`class_map_name`)."""
        return self.production_dir / class_map_name(self.slide_id, cls_name, kind, ext)


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


#: the label folder of a slide whose label cannot be resolved (its claim and failed state go there)
UNRESOLVED_GROUPING = "_unresolved_label"


def run_record_path(cfg: HeatmapConfig, run_id: str) -> Path:
    """``{raw_save_dir}/{save_exp_code}/runs/{run_id}.json``: the effective config's hash every
    worker of run ``run_id`` must share."""
    return effective_config_path(cfg).parent / "runs" / f"{run_id}.json"


def results_lock_path(results_csv: Path) -> Path:
    """``{results CSV}.lock``: held while a worker assembles the results CSV."""
    return results_csv.with_name(results_csv.name + ".lock")


def results_csv_path(cfg: HeatmapConfig, process_list: Path | None) -> Path:
    """CLAM's results table: ``heatmaps/results/{process_list stem or save_exp_code}.csv``."""
    stem = process_list.stem if process_list is not None else cfg.exp_arguments.save_exp_code
    return Path(cfg.exp_arguments.results_dir) / f"{stem}.csv"


def autogen_process_list_path(cfg: HeatmapConfig) -> Path:
    """Where a process list built from ``data_dir`` is kept: beside the effective config."""
    return effective_config_path(cfg).parent / "process_list_autogen.csv"


# ------------------------------------------------------------------ score maps and their legends

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAP_KINDS = ("score", "attention")


def _safe(name: str) -> str:
    out = _UNSAFE.sub("_", str(name)).strip("._")
    return out or "class"


def class_map_name(slide_id: str, cls_name: str | None, kind: str, ext: str = "jpg") -> str:
    """File name of one class's map (one image per class).

    * ``kind='score'``: ``{slide_id}_score_{cls}.{ext}`` - class evidence of ``cls``.
    * ``kind='attention'``: ``{slide_id}_attention.{ext}`` (``cls_name`` None: the single
      attention branch) or ``{slide_id}_attention_{cls}.{ext}`` (a per-class branch, CLAM-MB).

    ``cls`` is the class name with every run of characters outside ``[A-Za-z0-9._-]`` replaced by
    ``_`` (``'high grade/G3'`` -> ``'high_grade_G3'``).

    Raises:
        ValueError: unknown ``kind``, or ``kind='score'`` without a class name.
    """
    ext = ext.lstrip(".")
    if kind == "score":
        if cls_name is None or str(cls_name) == "":
            raise ValueError("class_map_name: a score map needs a class name")
        return f"{slide_id}_score_{_safe(cls_name)}.{ext}"
    if kind == "attention":
        return f"{slide_id}_attention.{ext}" if cls_name is None else f"{slide_id}_attention_{_safe(cls_name)}.{ext}"
    raise ValueError(f"class_map_name: kind must be one of {MAP_KINDS}, got {kind!r}")


def colorbar_path(image: Path) -> Path:
    """``{image stem}_colorbar.png`` beside a score map."""
    return image.with_name(image.stem + "_colorbar.png")


def style_json_path(image: Path) -> Path:
    """``{image stem}_style.json`` beside a heatmap: the rendering style it was drawn with."""
    return image.with_name(image.stem + "_style.json")


def scale_json_path(image: Path) -> Path:
    """``{image stem}_scale.json`` beside a score map."""
    return image.with_name(image.stem + "_scale.json")


# ------------------------------------------------------------------ the seed commands' output folder

SEED_EXP_CODE = "results"


def seed_exp_arguments(output_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``exp_arguments`` paths of a seed command run into ``output_dir``: ``save_exp_code`` is
    ``results`` (:data:`SEED_EXP_CODE`), so the results table (an in-memory process list is named
    by ``save_exp_code``) is ``{output_dir}/results.csv``, the production folder
    ``{output_dir}/results/`` and the raw folder ``{output_dir}/raw/results/``."""
    out = Path(output_dir)
    return {"save_exp_code": SEED_EXP_CODE, "raw_save_dir": str(out / "raw"), "production_save_dir": str(out),
            "results_dir": str(out)}


# ------------------------------------------------------------------ high-resolution outputs


def coords_h5_path(out_path: str | os.PathLike[str]) -> Path:
    """``{output stem}_coords.h5`` beside a heatmap file."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}{COORDS_SUFFIX}")


def scores_tiff_path(out_path: str | os.PathLike[str]) -> Path:
    """``{output stem}_scores.tif`` beside a heatmap TIFF (the raw score map)."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}_scores.tif")


def qupath_companions(out_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``{output stem}_tiles.geojson`` and ``{output stem}_tissue_annotations.geojson`` beside a heatmap."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}_tiles.geojson"), p.with_name(f"{p.stem}_tissue_annotations.geojson")


def dsa_companion(out_path: str | os.PathLike[str]) -> Path:
    """``{output stem}_dsa_annotation.json`` beside a heatmap (the DSA / HistomicsUI annotation)."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}_dsa_annotation.json")


def highres_work_dir(out_path: str | os.PathLike[str]) -> Path:
    """``{output stem}_work/`` beside a high-resolution heatmap: the run's raw outputs
    (features, blockmap, fine-pass H5, tissue contours), reused by a rerun."""
    p = Path(out_path)
    return p.parent / f"{p.stem}_work"




