"""The run loop: one config, every slide of its process list, one failure never stops the batch.

After each slide the process list's ``status`` (``processed`` / ``failed: <reason>``) and the
results CSV (process list + ``bag_size``, ``Pred_c``, ``p_c``) are rewritten atomically, so an
interrupted batch loses nothing already done, and a rerun skips slides whose outputs are complete.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from models import tune_cpu_allocator
from models.checkpoints import load_mil_checkpoint
from wsi_core.errors import ConfigError, WsiHeatmapsError
from wsi_core.io import atomic_path

from .config import HeatmapConfig, config_to_dict
from .outputs import effective_config_path, results_csv_path, slide_outputs
from .pipeline import RunContext, SlideResult, draw_run_score_maps, process_slide
from .process_list import read_process_list, slide_task, write_csv

log = logging.getLogger("wsi_heatmaps")


@dataclass
class RunSummary:
    """What a run did: per-slide results and failures, and where the tables are."""

    results_csv: Path | None = None
    processed: list[SlideResult] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (slide_id, reason)
    n_encoded: int = 0
    seconds: float = 0.0


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _write_status(path: Path | None, row: int, status: str, warned: set[Path]) -> None:
    """Write a slide's status back into the user's process list (atomically). A read-only list is
    warned about once per run and left alone: the results CSV carries the status too."""
    if path is None:
        return
    try:
        df = pd.read_csv(path, dtype={"slide_id": str, "label": object})
        if "status" not in df.columns:
            df["status"] = "tbp"
        df["status"] = df["status"].astype(object)
        df.loc[row, "status"] = status
        write_csv(df, path)
    except (OSError, WsiHeatmapsError) as exc:
        if path not in warned:
            log.warning("could not write status back to %s (%s); the results CSV holds it", path, exc)
            warned.add(path)


def _record(df: pd.DataFrame, i: int, result: SlideResult, names: dict[int, str], n_classes: int) -> None:
    df.loc[i, "bag_size"] = result.bag_size
    for c, (name, p) in enumerate(result.ranked(names)[:n_classes]):
        df.loc[i, f"Pred_{c}"] = name
        df.loc[i, f"p_{c}"] = p


def dry_run(cfg: HeatmapConfig, *, source: str) -> list[str]:
    """Validate and resolve everything without running a model; returns the plan's lines.

    Raises:
        ConfigError: the process list or checkpoint cannot be found.
    """
    df, pl_path = read_process_list(cfg.data_arguments)
    lines = [f"config {source}: {len(df)} slides in {pl_path or 'data_dir'}; checkpoint {cfg.model_arguments.ckpt_path}"
             f" ({'found' if Path(cfg.model_arguments.ckpt_path).is_file() else 'MISSING'}); "
             f"patch {cfg.patching_arguments.patch_size} px at level {cfg.patching_arguments.patch_level}, "
             f"fine step {cfg.step_size} px (overlap {cfg.patching_arguments.overlap})"]
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
    return lines


def run_config(cfg: HeatmapConfig, *, source: str = "<config>", force: bool = False, progress: bool = True,
               device: str | None = None) -> RunSummary:
    """Run one config over its process list.

    Raises:
        WsiHeatmapsError: problems that concern the whole config (process list, checkpoint);
        a slide's own problems are recorded in its ``status`` and the run goes on.
    """
    t0 = time.perf_counter()
    device = device or default_device()
    tune_cpu_allocator()
    df, pl_path = read_process_list(cfg.data_arguments)
    selected = df["process"].astype(float).astype(int) == 1
    rows = list(df.index[selected])          # row of each slide in the user's process list
    todo = df[selected].reset_index(drop=True)
    if len(todo) == 0:
        raise ConfigError(f"{source}: no slide has process == 1 in the process list {pl_path or ''}")
    m = cfg.model_arguments
    model = load_mil_checkpoint(m.ckpt_path, model_type=m.model_type, n_classes=m.n_classes, model_size=m.model_size,
                                drop_out=m.drop_out, embed_dim=m.embed_dim, device=device,
                                model_kwargs=m.model_kwargs())
    names = {v: k for k, v in cfg.data_arguments.label_dict.items()}
    ctx = RunContext(cfg=cfg, model=model, class_names=names, device=device, force=force, progress=progress)

    cfg_path = effective_config_path(cfg)
    with atomic_path(cfg_path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    summary = RunSummary(results_csv=results_csv_path(cfg, pl_path))
    if pl_path is None:   # built from data_dir: keep the generated list beside the raw outputs
        pl_path = write_csv(df, cfg_path.parent / "process_list_autogen.csv")

    warned: set[Path] = set()
    bar = tqdm(range(len(todo)), desc=f"slides ({cfg.exp_arguments.save_exp_code})", unit="slide", disable=not progress)
    for i in bar:
        sid = str(todo.loc[i, "slide_id"])
        try:
            task = slide_task(todo.loc[i], cfg.data_arguments, use_roi=cfg.heatmap_arguments.use_roi)
            sid = task.slide_id
            result = process_slide(ctx, task)
            _record(todo, i, result, names, cfg.exp_arguments.n_classes)
            status = "processed"
            summary.processed.append(result)
            top, p = result.ranked(names)[0]
            log.info("%s: bag %d, pred %s (p=%.4f), %.1f s%s", sid, result.bag_size, top, p, result.seconds,
                     " (outputs complete, skipped; --force reruns)" if result.skipped else "")
        except WsiHeatmapsError as exc:
            status = f"failed: {exc}"
            summary.failed.append((sid, str(exc)))
            log.error("%s: FAILED: %s", sid, exc)
        except Exception as exc:  # noqa: BLE001 - one bad slide never stops the batch
            status = f"failed: {type(exc).__name__}: {exc}"
            summary.failed.append((sid, status[8:]))
            log.error("%s: FAILED with an unexpected error: %s: %s", sid, type(exc).__name__, exc)
            log.debug("%s", traceback.format_exc())
        todo.loc[i, "status"] = status.replace("\n", " ")
        write_csv(todo, summary.results_csv)
        _write_status(pl_path, rows[i], status.replace("\n", " "), warned)
    if cfg.heatmap_arguments.score_maps and cfg.heatmap_arguments.normalize_across_slides:
        try:
            draw_run_score_maps(ctx, summary.processed)
        except WsiHeatmapsError as exc:
            log.error("score maps across slides: FAILED: %s", exc)
            summary.failed.append(("score maps", str(exc)))
    summary.n_encoded = ctx.n_encoded
    summary.seconds = time.perf_counter() - t0
    return summary
