"""The run loop: one config, every slide of its process list, one failure never stops the batch.

Before the first slide the run fails fast on what concerns every slide (the checkpoint, the
encoder and its weights, their widths, the class count). Computing and bookkeeping are apart: an
:class:`heatmaps.executors.Executor` runs :func:`heatmaps.pipeline.run_slide` over the slides and
yields each outcome; the :class:`heatmaps.results.ResultsBook` (owned here, by this worker) writes
the slide's state and assembles the results CSV (process list + ``status``, ``bag_size``,
``Pred_c``, ``p_c``) from the states, atomically, so an interrupted batch loses nothing already
done. The default executor claims each slide (:mod:`heatmaps.claims`), so several workers - local
processes, GPUs, SLURM array tasks (:mod:`heatmaps.workers`) - can share one config's run; workers
of one run must share the effective config (:func:`join_run`). The user's process list is only
read. A rerun skips slides whose outputs are complete and whose state says processed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
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

from .cache import CODE_VERSION, weights_sha256
from .claims import DEFAULT_LOCK_TIMEOUT, HOST, ClaimInfo, create_exclusive, job_id, new_run_id, shared_run_id
from .config import HeatmapConfig, config_to_dict
from .context import RunContext
from .executors import ClaimingExecutor, Executor
from .layout import (UNRESOLVED_GROUPING, autogen_process_list_path, effective_config_path, results_csv_path,
                     run_record_path, slide_outputs)
from .pipeline import SlideResult, draw_run_score_maps, run_slide
from .process_list import (initialize_process_list, load_preset, read_process_list, slide_label, slide_stem, slide_task,
                           write_csv)
from .results import ResultsBook, RunIdentity, RunSummary
from .state import read_state

__all__ = ["run_config", "dry_run", "DryRunPlan", "default_device", "RunSummary", "WorkerOptions", "join_run",
           "config_sha256", "plan_jobs", "selected_slides"]

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


def config_sha256(cfg: HeatmapConfig) -> str:
    """sha256 of the effective config as written to ``config.yaml`` (every default filled in)."""
    return hashlib.sha256(yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode()).hexdigest()


def join_run(cfg: HeatmapConfig, run_id: str, *, source: str, method: str = "auto") -> None:
    """Record (first worker) or check (every other worker) the effective config's hash of run
    ``run_id`` in :func:`heatmaps.layout.run_record_path`.

    Raises:
        ConfigError: another worker of this run started with another effective config.
    """
    sha = config_sha256(cfg)
    path = run_record_path(cfg, run_id)
    body = json.dumps({"run_id": run_id, "config_sha256": sha, "host": HOST, "pid": os.getpid(), "job_id": job_id(),
                       "started": time.time(), "source": source}).encode()
    if create_exclusive(path, body, method=method):
        return
    for _ in range(50):          # the first worker's record may be read while it is written (excl)
        try:
            first = json.loads(path.read_text())
            break
        except ValueError:
            time.sleep(0.02)
    else:
        raise ConfigError(f"{path}: unreadable run record; delete it and start the run again")
    if first.get("config_sha256") != sha:
        raise ConfigError(f"{source}: the effective config differs from the one the first worker of run {run_id} "
                          f"started with ({first.get('host')} pid {first.get('pid')}, {path}): the config changed "
                          "between workers; start every worker with the same config, or use another save_exp_code")


@dataclass
class _Job:
    """One selected row of the process list: its index, slide id, claim and state files."""

    index: int
    slide_id: str
    claim: Path
    state: Path


def plan_jobs(cfg: HeatmapConfig, todo: pd.DataFrame) -> list[_Job]:
    """One job per selected row; a row whose label cannot be resolved keeps its claim and state
    in :data:`heatmaps.layout.UNRESOLVED_GROUPING` (it fails with its reason when run). Rows of the
    same slide and label share its claim (they write the same outputs) but each has its state."""
    jobs, seen = [], {}
    for i in range(len(todo)):
        try:
            slide_id, _, grouping = slide_label(todo.loc[i], cfg.data_arguments)
        except WsiHeatmapsError:
            slide_id, grouping = slide_stem(str(todo.loc[i, "slide_id"]), cfg.data_arguments.slide_ext), UNRESOLVED_GROUPING
        out = slide_outputs(cfg, slide_id, grouping)
        k = seen[(slide_id, grouping)] = seen.get((slide_id, grouping), -1) + 1
        jobs.append(_Job(i, slide_id, out.claim_lock, out.repeat_state_json(k)))
    return jobs


def selected_slides(cfg: HeatmapConfig, process_list: pd.DataFrame | None = None) -> tuple[pd.DataFrame, Path | None]:
    """The process list's rows with ``process == 1`` (reset index) and the list's CSV (None when
    in memory or built from data_dir)."""
    df, pl_path = _process_list(cfg, process_list)
    selected = df["process"].astype(float).astype(int) == 1
    return df[selected].reset_index(drop=True), pl_path


@dataclass
class WorkerOptions:
    """How this process shares a run with other workers (:mod:`heatmaps.workers`).

    ``run_id``: the run shared by the workers (None: ``$WSI_HEATMAPS_RUN_ID`` /
    ``$SLURM_ARRAY_JOB_ID``, else a new one); ``shard``: ``(i, n)`` - only rows ``i, i+n, ...``;
    ``multi``: one of several workers (the results CSV is assembled at the end, not after every
    slide; score maps normalised across slides are refused); ``lock_timeout`` (s) and
    ``lock_method``: see :mod:`heatmaps.claims`.
    """

    run_id: str | None = None
    shard: tuple[int, int] | None = None
    multi: bool = False
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    lock_method: str = "auto"


def run_config(cfg: HeatmapConfig, *, source: str = "<config>", force: bool = False, progress: bool = True,
               device: str | None = None, executor: Executor | None = None,
               process_list: pd.DataFrame | None = None, model: MILModel | None = None,
               worker: WorkerOptions | None = None) -> RunSummary:
    """Run one config over its process list.

    ``executor``: how slides are distributed (default: a :class:`ClaimingExecutor`, so other
    workers may share the run). ``worker``: the run this process shares (see :class:`WorkerOptions`).
    ``process_list``: an in-memory process list (``slide_id`` and any CLAM column) used instead of
    ``data_arguments.process_list``; its defaults come from the preset as for a CSV, the results
    CSV is ``{results_dir}/{save_exp_code}.csv`` and the list itself is kept beside the raw outputs.
    ``model``: the checkpoint already loaded by the caller (the command lines read it to size the
    config), so it is not read twice; ignored when ``model_arguments`` set options the weights
    cannot tell (``combine``, ``num_landmarks``), which shape the model.

    Raises:
        WsiHeatmapsError: problems that concern the whole config (process list, checkpoint, an
        effective config that differs from another worker's of the same run, an output folder that
        cannot be written); a slide's own problems are recorded in its state and ``status`` and
        the run goes on.
    """
    t0 = time.perf_counter()
    worker = worker or WorkerOptions()
    shared_id = worker.run_id or shared_run_id()
    run_id = shared_id or new_run_id()
    device = device or default_device()
    tune_cpu_allocator()
    todo, pl_path = selected_slides(cfg, process_list)
    if len(todo) == 0:
        raise ConfigError(f"{source}: no slide has process == 1 in the process list {pl_path or ''}")
    h = cfg.heatmap_arguments
    if (worker.multi or worker.shard) and h.score_maps and h.normalize_across_slides:
        raise ConfigError(f"{source}: heatmap_arguments.normalize_across_slides fits one scale on every slide, which "
                          "needs them in one process; run with one worker or set it to false")
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

    if shared_id:
        join_run(cfg, run_id, source=source, method=worker.lock_method)
    write_effective_config(cfg)
    results_csv = results_csv_path(cfg, pl_path)
    if pl_path is None:   # built from data_dir: keep the generated list beside the raw outputs
        df, _ = _process_list(cfg, process_list)
        write_csv(df, autogen_process_list_path(cfg))
    jobs = plan_jobs(cfg, todo)
    enc = cfg.encoder_arguments
    identity = RunIdentity(run_id=run_id, config_sha256=config_sha256(cfg), tool_version=CODE_VERSION,
                           model_sha256=ctx.model_sha256(), encoder=enc.model_name,
                           encoder_weights=weights_sha256(enc.weights_path) if enc.weights_path else None)
    book = ResultsBook(todo, results_csv=results_csv, class_names=names, n_classes=cfg.exp_arguments.n_classes,
                       state_paths=[j.state for j in jobs], identity=identity, assemble_each=not worker.multi)

    def work(job: _Job) -> SlideResult:
        task = slide_task(todo.loc[job.index], cfg.data_arguments, use_roi=cfg.heatmap_arguments.use_roi)
        job.slide_id = task.slide_id
        return run_slide(ctx, task)

    def done_in_this_run(job: _Job) -> bool:
        state = read_state(job.state) if job.state.is_file() else None
        return state is not None and state.run_id == run_id

    def clean_after(job: _Job, stale: ClaimInfo) -> None:
        """A dead worker's temporary files of this slide (same host: its pid names them)."""
        if stale.host != HOST or stale.pid <= 0:
            return
        try:
            sid, _, grouping = slide_label(todo.loc[job.index], cfg.data_arguments)
        except WsiHeatmapsError:
            return
        for tmp in slide_outputs(cfg, sid, grouping).temp_files(stale.pid):
            log.info("%s: removing %s, left by the killed worker", job.slide_id, tmp)
            tmp.unlink(missing_ok=True)

    if worker.shard is not None:
        i, n = worker.shard
        jobs = [j for j in jobs if j.index % n == i]
    executor = executor or ClaimingExecutor(lambda j: j.claim, done=done_in_this_run, run_id=run_id,
                                            lock_timeout=worker.lock_timeout, method=worker.lock_method,
                                            on_takeover=clean_after)
    bar = progress_bar(len(jobs), progress, f"slides ({cfg.exp_arguments.save_exp_code})", unit="slide")
    for job, outcome in executor.map(work, jobs):
        book.record(job.index, job.slide_id, outcome)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    book.assemble()
    summary = book.summary
    if isinstance(executor, ClaimingExecutor) and executor.skipped_held:
        summary.held_elsewhere = [j.slide_id for j in executor.skipped_held]
        log.info("%s: %d slides were being computed by other workers: %s", source, len(summary.held_elsewhere),
                 ", ".join(summary.held_elsewhere[:5]) + (" ..." if len(summary.held_elsewhere) > 5 else ""))
    if h.score_maps and h.normalize_across_slides:
        try:
            draw_run_score_maps(ctx, summary.processed)
        except WsiHeatmapsError as exc:
            log.error("score maps across slides: FAILED: %s", exc)
            summary.failed.append(("score maps", str(exc)))
    summary.n_encoded = ctx.n_encoded
    summary.seconds = time.perf_counter() - t0
    return summary
