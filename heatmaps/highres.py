"""High-resolution heatmaps of one slide, no YAML (the command line's flags are in :mod:`heatmaps.cli`).

:func:`run_highres` builds a config in memory from a :class:`HighresRequest` and runs the same
per-slide pipeline as a YAML run (:func:`heatmaps.pipeline.run_slide`), then puts the heatmap at
``output`` and the patches behind it in ``{output stem}_coords.h5``. :func:`rerender` draws an
existing result (a blockmap, an overlap H5 or a ``_coords.h5``) at any level, colormap and alpha
without running a model (and without importing torch).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from vis_utils import HeatmapStyle, rank_percentiles
from wsi_core.errors import ConfigError
from wsi_core.formats import (ATTENTION_RAW, has_raw_scores, read_raw_scores, read_scores, score_file_kind,
                              scores_are_percentiles, write_coords_h5)
from wsi_core.qupath import write_qupath_annotations, write_qupath_tiles
from wsi_core.levels import patch_footprint_level0, resolve_level
from wsi_core.slide import open_slide
from wsi_core.tissue import contours_for_scores

from .cli_args import HIGHRES_ALPHA, check_label_dict
from .config import HeatmapConfig, apply_overrides, parse_config
from .layout import coords_h5_path, dsa_companion, highres_work_dir, qupath_companions, scores_tiff_path, slide_outputs
from .light import require_full_install
from .process_list import ROI_COLUMNS, SlideTask, initialize_process_list, load_preset, slide_stem, slide_task
from .writers.dsa import write_dsa
from .writers.images import write_heatmap

if TYPE_CHECKING:   # torch stays out of a --scores re-render
    from models import MILModel

log = logging.getLogger(__name__)
OUTPUT_EXTS = {".tiff": "tiff", ".tif": "tiff", ".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}


def _output_ext(output: str) -> str:
    ext = OUTPUT_EXTS.get(Path(output).suffix.lower())
    if ext is None:
        raise ConfigError(f"--output {output}: unsupported extension '{Path(output).suffix}'; use .tiff, .tif, .png or .jpg")
    return ext


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``'x1,y1,x2,y2'`` (level-0 px) -> a tuple; ConfigError on anything else."""
    if not text:
        return None
    parts = text.replace(" ", "").split(",")
    if len(parts) != 4 or not all(re.fullmatch(r"-?\d+", p) for p in parts):
        raise ConfigError(f"--roi {text!r}: expected four integers x1,y1,x2,y2 in level-0 px")
    x1, y1, x2, y2 = (int(p) for p in parts)
    return x1, y1, x2, y2


@dataclass(frozen=True)
class HighresRequest:
    """One slide, no YAML: ``checkpoint`` (run the model) or ``scores`` (re-render a score file)
    on ``slide``, written to ``output`` (.tiff/.tif pyramidal, .png, .jpg).

    Units: ``patch_size`` px at level 0; ``roi`` ``(x1, y1, x2, y2)`` level-0 px; ``vis_level``
    a pyramid level (-1: the best level for downsample 32); ``alpha`` 0-1 (default 0.5); ``overlap``
    0-1 (default 0.9). ``label_dict``: class name -> index of the checkpoint (names in the summary
    line). ``overrides``: ``section.key=value`` strings applied to the built config.

    The run's intermediate files (features, blockmap and fine-pass H5, tissue contours) go to
    ``{output stem}_work/`` beside ``output`` (:func:`heatmaps.layout.highres_work_dir`); a rerun
    reuses them, and the folder may be deleted once the heatmap is written.
    """

    slide: str
    output: str
    checkpoint: str | None = None
    scores: str | None = None
    model_type: str = "clam_sb"
    feature_extractor: str = "auto"
    encoder_weights: str | None = None
    precision: str | None = None
    fully_convolutional: bool = False
    vis_level: int = 0
    patch_size: int = 256
    cmap: str = "jet"
    alpha: float = HIGHRES_ALPHA
    batch_size_extract: int = 32
    batch_size_infer: int = 512
    roi: tuple[int, int, int, int] | None = None
    raw_scores: bool = False
    tiff_background: str = "empty"
    geojson: bool = False
    dsa: bool = False
    overlap: float | None = None
    overrides: tuple[str, ...] = ()
    label_dict: dict[str, int] = field(default_factory=dict)


def class_summary(pred: int, probs, names: dict[int, str]) -> str:
    """The predicted class in words: ``'LUAD (p=0.9731)'`` when the classes are named, else
    ``'class 1 of 2 (p=0.9731)'`` (0-based index of ``len(probs)`` classes)."""
    p = float(probs[pred])
    return f"{names[pred]} (p={p:.4f})" if pred in names else f"class {pred} of {len(probs)} (p={p:.4f})"


def build_config(req: HighresRequest, model: MILModel) -> HeatmapConfig:
    """The in-memory config of a ``checkpoint`` request for ``model`` (its class count and input
    width; ``feature_extractor: auto`` reads the encoder from the width); raw outputs go to
    :func:`heatmaps.layout.highres_work_dir`. ``req.overrides`` are applied last.

    Raises:
        ConfigError: bad output extension, missing slide, bad values.
        CheckpointError: no registered encoder gives the model's input width.
    """
    from models import encoder_for_dim

    slide, out = Path(req.slide), Path(req.output)
    ext = _output_ext(req.output)
    if not slide.exists():
        raise ConfigError(f"--slide {slide}: file not found")
    check_label_dict(req.label_dict, int(model.n_classes), checkpoint=str(req.checkpoint))
    work = highres_work_dir(out)
    encoder = encoder_for_dim(int(model.in_dim)) if req.feature_extractor == "auto" else req.feature_extractor
    data = {
        "exp_arguments": {"n_classes": int(model.n_classes), "save_exp_code": slide_stem(slide.name, ""),
                          "raw_save_dir": str(work / "raw"), "production_save_dir": str(work / "production"),
                          "results_dir": str(work), "batch_size": req.batch_size_extract,
                          "batch_size_infer": req.batch_size_infer},
        "data_arguments": {"data_dir": str(slide.parent), "slide_ext": "", "preset": "presets/bwh_biopsy.csv",
                           "label_dict": dict(req.label_dict)},
        "patching_arguments": {"patch_size": req.patch_size, "overlap": req.overlap if req.overlap is not None else 0.9},
        "encoder_arguments": {"model_name": encoder, "weights_path": req.encoder_weights, "precision": req.precision,
                              "fully_convolutional": bool(req.fully_convolutional)},
        "model_arguments": {"ckpt_path": req.checkpoint, "model_type": req.model_type, "model_size": None,
                            "embed_dim": int(model.in_dim)},
        "heatmap_arguments": {"vis_level": req.vis_level, "alpha": req.alpha, "cmap": req.cmap, "save_ext": ext,
                              "save_orig": False, "use_roi": req.roi is not None, "raw_scores": bool(req.raw_scores),
                              "tiff_background": req.tiff_background, "save_geojson": bool(req.geojson),
                              "save_dsa": bool(req.dsa)},
        "sample_arguments": {"samples": []},
    }
    cfg = parse_config(data, source="command line")
    return apply_overrides(cfg, list(req.overrides), source="--set") if req.overrides else cfg


def _slide_task(cfg: HeatmapConfig, req: HighresRequest) -> SlideTask:
    """The request's one slide as a process-list row resolved in memory (preset, ROI)."""
    row = {"slide_id": Path(req.slide).name}      # no label: the 'Unspecified' folder
    if req.roi:
        row.update(dict(zip(ROI_COLUMNS, req.roi)))
    df = initialize_process_list(pd.DataFrame([row]), load_preset(cfg.data_arguments.preset))
    return slide_task(df.iloc[0], cfg.data_arguments, use_roi=cfg.heatmap_arguments.use_roi)


def run_highres(req: HighresRequest, *, device: str | None = None, force: bool = False,
                progress: bool = True) -> Path:
    """Run the model of ``req.checkpoint`` on ``req.slide`` (the checkpoint read once, the slide
    opened once) and put the heatmap at ``req.output`` with ``{output stem}_coords.h5`` beside it.

    Raises:
        WsiHeatmapsError: any bad input (config, checkpoint, slide, ROI); MissingDependencyError on
        the light install.
    """
    require_full_install("--checkpoint")
    from models import tune_cpu_allocator
    from models.checkpoints import load_mil_checkpoint

    from .context import RunContext
    from .pipeline import run_slide
    from .run import default_device, write_effective_config

    device = device or default_device()
    tune_cpu_allocator()
    model = load_mil_checkpoint(req.checkpoint, model_type=req.model_type, device=device)
    cfg = build_config(req, model)
    options = cfg.model_arguments.model_kwargs()
    if options:   # options the weights cannot tell (dsmil combine, transmil landmarks) shape the model
        model = load_mil_checkpoint(req.checkpoint, model_type=req.model_type, device=device, model_kwargs=options)
    task = _slide_task(cfg, req)
    write_effective_config(cfg)
    names = {v: k for k, v in cfg.data_arguments.label_dict.items()}
    ctx = RunContext(cfg=cfg, model=model, class_names=names, device=device, force=force, progress=progress)
    with open_slide(task.slide_path) as slide:
        result = run_slide(ctx, task, slide=slide)
    out = finish_highres(cfg, task, req.output)
    log.info("%s: predicted %s; heatmap: %s (patches: %s; intermediate files: %s)", task.slide_id,
             class_summary(result.pred, result.probs, names), out, coords_h5_path(out), highres_work_dir(out))
    return out


def finish_highres(cfg: HeatmapConfig, task: SlideTask, output: str) -> Path:
    """Move the run's heatmap to ``output`` and write ``{output stem}_coords.h5`` beside it."""
    out = Path(output)
    so = slide_outputs(cfg, task.slide_id, task.grouping)
    os.replace(so.heatmap(cfg), out)
    if cfg.heatmap_arguments.raw_scores and scores_tiff_path(so.heatmap(cfg)).is_file():
        os.replace(scores_tiff_path(so.heatmap(cfg)), scores_tiff_path(out))
    if cfg.heatmap_arguments.save_geojson:
        for made, there in zip((so.qupath_tiles(), so.qupath_tissue()), qupath_companions(out)):
            if made.is_file():
                os.replace(made, there)
    if cfg.heatmap_arguments.save_dsa and so.dsa_annotation().is_file():
        os.replace(so.dsa_annotation(), dsa_companion(out))
    fine = read_scores(so.overlap_h5())
    p = cfg.patching_arguments
    write_coords_h5(coords_h5_path(out), fine.coords, fine.scores, patch_size=p.patch_size, step=cfg.step_size,
                    patch_level=p.patch_level, encoder=cfg.encoder_arguments.model_name,
                    score_kind="percentile" if cfg.heatmap_arguments.use_ref_scores else "raw",
                    precision=str(fine.attrs.get("precision", cfg.encoder_arguments.precision or "auto")))
    return out


def rerender(req: HighresRequest) -> Path:
    """``--scores`` mode: draw an existing score file on the slide at ``req.vis_level`` (no torch).

    Raises:
        ConfigError: bad output extension or level. FeatureFileError: not a score file.
    """
    ext = _output_ext(req.output)
    scores_path = Path(req.scores)
    sf = read_scores(scores_path)
    percentile = scores_are_percentiles(sf, file_kind=score_file_kind(scores_path))
    with open_slide(req.slide) as slide:
        level = resolve_level(slide, req.vis_level, key="--vis_level")
        footprint = patch_footprint_level0(slide, patch_size=int(sf.attrs.get("patch_size", req.patch_size)),
                                           patch_level=int(sf.attrs.get("patch_level", 0)))
        kw = dict(patch_size_level0=footprint, vis_level=level, contours=contours_for_scores(slide, scores_path)[0],
                  style=HeatmapStyle(cmap=req.cmap, alpha=req.alpha), convert_to_percentiles=not percentile, roi=req.roi)
        write_heatmap(slide, sf.scores, sf.coords, Path(req.output),
                      raw_scores=scores_tiff_path(req.output) if req.raw_scores and ext == "tiff" else None,
                      empty_background=req.tiff_background == "empty", **kw)
        if req.geojson:
            tiles, tissue = qupath_companions(req.output)
            pct = sf.scores if percentile else rank_percentiles(sf.scores)
            measurements = {"attention_percentile": pct}
            if has_raw_scores(scores_path):
                measurements[ATTENTION_RAW] = read_raw_scores(scores_path).attention
            write_qupath_tiles(tiles, sf.coords, footprint, measurements)
            write_qupath_annotations(tissue, kw["contours"])
        if req.dsa:
            write_dsa(dsa_companion(req.output), slide, sf.coords, footprint,
                      sf.scores if percentile else rank_percentiles(sf.scores), cmap=req.cmap, alpha=req.alpha,
                      source=scores_path.name)
    log.info("%s: %d patches re-rendered at level %d -> %s", scores_path.name, len(sf.coords), level, req.output)
    return Path(req.output)
