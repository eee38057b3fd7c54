"""The run loop: one config, every slide of its process list, one failure never stops the batch.

Before the first slide the run fails fast on what concerns every slide (the checkpoint, the
encoder and its weights, their widths, the class count). Computing and bookkeeping are apart: an
:class:`heatmaps.executors.Executor` runs :func:`heatmaps.pipeline.run_slide` over the slides and
yields each outcome; the :class:`heatmaps.results.ResultsBook` (owned here, by the parent) records
it - the results CSV (process list + ``status``, ``bag_size``, ``Pred_c``, ``p_c``) rewritten
atomically after each slide, so an interrupted batch loses nothing already done. The user's
process list is only read. A rerun skips slides whose outputs are complete.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml

from models import MILModel, tune_cpu_allocator
from models.encode import progress_bar
from models.checkpoints import load_mil_checkpoint
from wsi_core.errors import ConfigError, WsiHeatmapsError
from wsi_core.io import atomic_path

from .config import HeatmapConfig, config_to_dict
from .context import RunContext
from .executors import Executor, SequentialExecutor
from .layout import autogen_process_list_path, effective_config_path, results_csv_path, slide_outputs
from .pipeline import SlideResult, draw_run_score_maps, run_slide
from .process_list import initialize_process_list, load_preset, read_process_list, slide_task, write_csv
from .results import ResultsBook, RunSummary

__all__ = ["run_config", "dry_run", "DryRunPlan", "default_device", "RunSummary"]

log = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _process_list(cfg: HeatmapConfig, given: pd.DataFrame | None) -> tuple[pd.DataFrame, Path | None]:
    """The config's process list and its CSV (None when built in memory or from data_dir); a
    ``given`` DataFrame (e.g. a command line's list of slides) replaces ``data_arguments.process_list``
    and gets the preset's parameters like a CSV would."""
    if given is None:
        return read_process_list(cfg.data_arguments)
    return initialize_process_list(given, load_preset(cfg.data_arguments.preset)), None


@dataclass
class DryRunPlan:
    """What :func:`dry_run` found: the plan's ``lines`` (printable) and its ``errors`` (one line
    each: a missing checkpoint, a slide that cannot be resolved). ``ok`` when there is none."""

    lines: list[str]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


def dry_run(cfg: HeatmapConfig, *, source: str, process_list: pd.DataFrame | None = None) -> DryRunPlan:
    """Validate and resolve everything without running a model.

    ``process_list``: an in-memory process list used instead of ``data_arguments.process_list``.

    Returns:
        The plan: one header line, one line per slide (``run``, ``skip`` or ``ERROR``) and the
        errors (a missing checkpoint file, each slide that cannot be resolved).

    Raises:
        ConfigError: the process list or the preset cannot be found or read.
    """
    df, pl_path = _process_list(cfg, process_list)
    ckpt = cfg.model_arguments.ckpt_path
    found = Path(ckpt).is_file()
    lines = [f"config {source}: {len(df)} slides in {pl_path or ('the command line' if process_list is not None else 'data_dir')}; "
             f"checkpoint {ckpt} ({'found' if found else 'MISSING'}); "
             f"patch {cfg.patching_arguments.patch_size} px at level {cfg.patching_arguments.patch_level}, "
             f"fine step {cfg.step_size} px (overlap {cfg.patching_arguments.overlap})"]
    errors = [] if found else [f"{source}: checkpoint not found: {ckpt}; fix model_arguments.ckpt_path"]
    for _, row in df.iterrows():
        if int(float(row["process"])) != 1:
            lines.append(f"  skip  {row['slide_id']} (process != 1)")
            continue
        try:
            task = slide_task(row, cfg.data_arguments, use_roi=cfg.heatmap_arguments.use_roi)
            out = slide_outputs(cfg, task.slide_id, task.grouping)
            roi = f" roi {task.roi}" if task.roi else ""
            feats = f" features {task.features_path}" if task.features_path else ""
            lines.append(f"  run   {task.slide_id}: {task.slide_path}{roi}{feats} -> {out.heatmap(cfg)}")
        except WsiHeatmapsError as exc:
            lines.append(f"  ERROR {row['slide_id']}: {exc}")
            errors.append(f"{source}: {exc}")
    return DryRunPlan(lines, errors)


def write_effective_config(cfg: HeatmapConfig) -> Path:
    """The effective config (every default filled in) at ``{raw_save_dir}/{save_exp_code}/config.yaml``."""
    path = effective_config_path(cfg)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


@dataclass
class _Job:
    """One selected row of the process list: its index and (once resolved) its slide id."""

    index: int
    slide_id: str


def run_config(cfg: HeatmapConfig, *, source: str = "<config>", force: bool = False, progress: bool = True,
               device: str | None = None, executor: Executor | None = None,
               process_list: pd.DataFrame | None = None, model: MILModel | None = None) -> RunSummary:
    """Run one config over its process list.

    ``executor``: how slides are distributed (default: :class:`SequentialExecutor`).
    ``process_list``: an in-memory process list (``slide_id`` and any CLAM column) used instead of
    ``data_arguments.process_list``; its defaults come from the preset as for a CSV, the results
    CSV is ``{results_dir}/{save_exp_code}.csv`` and the list itself is kept beside the raw outputs.
    ``model``: the checkpoint already loaded by the caller (the command lines read it to size the
    config), so it is not read twice; ignored when ``model_arguments`` set options the weights
    cannot tell (``combine``, ``num_landmarks``), which shape the model.

    Raises:
        WsiHeatmapsError: problems that concern the whole config (process list, checkpoint);
        a slide's own problems are recorded in its ``status`` and the run goes on.
    """
    t0 = time.perf_counter()
    device = device or default_device()
    tune_cpu_allocator()
    df, pl_path = _process_list(cfg, process_list)
    selected = df["process"].astype(float).astype(int) == 1
    todo = df[selected].reset_index(drop=True)
    if len(todo) == 0:
        raise ConfigError(f"{source}: no slide has process == 1 in the process list {pl_path or ''}")
    m = cfg.model_arguments
    if model is None or m.model_kwargs():
        model = load_mil_checkpoint(m.ckpt_path, model_type=m.model_type, n_classes=m.n_classes,
                                    model_size=m.model_size, drop_out=m.drop_out, embed_dim=m.embed_dim,
                                    device=device, model_kwargs=m.model_kwargs())
    model = model.to(device)
    names = {v: k for k, v in cfg.data_arguments.label_dict.items()}
    ctx = RunContext(cfg=cfg, model=model, class_names=names, device=device, force=force, progress=progress)
    provided = bool(cfg.data_arguments.features_dir) or \
        ("features_path" in todo.columns and todo["features_path"].notna().any())
    ctx.prepare(encoder_required=not provided)

    write_effective_config(cfg)
    results_csv = results_csv_path(cfg, pl_path)
    if pl_path is None:   # built from data_dir: keep the generated list beside the raw outputs
        write_csv(df, autogen_process_list_path(cfg))
    book = ResultsBook(todo, results_csv=results_csv, class_names=names, n_classes=cfg.exp_arguments.n_classes)

    def work(job: _Job) -> SlideResult:
        task = slide_task(todo.loc[job.index], cfg.data_arguments, use_roi=cfg.heatmap_arguments.use_roi)
        job.slide_id = task.slide_id
        return run_slide(ctx, task)

    jobs = [_Job(i, str(todo.loc[i, "slide_id"])) for i in range(len(todo))]
    bar = progress_bar(len(jobs), progress, f"slides ({cfg.exp_arguments.save_exp_code})", unit="slide")
    for job, outcome in (executor or SequentialExecutor()).map(work, jobs):
        book.record(job.index, job.slide_id, outcome)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    summary = book.summary
    if cfg.heatmap_arguments.score_maps and cfg.heatmap_arguments.normalize_across_slides:
        try:
            draw_run_score_maps(ctx, summary.processed)
        except WsiHeatmapsError as exc:
            log.error("score maps across slides: FAILED: %s", exc)
            summary.failed.append(("score maps", str(exc)))
    summary.n_encoded = ctx.n_encoded
    summary.seconds = time.perf_counter() - t0
    return summary
