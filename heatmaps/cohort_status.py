"""Progress of a run across its workers: ``create-heatmaps status RUN_DIR``.

``RUN_DIR`` is ``{raw_save_dir}/{save_exp_code}`` (it holds the effective ``config.yaml`` every run
writes). From the config's process list, the per-slide states (:mod:`heatmaps.state`) and the
claims (:mod:`heatmaps.claims`) it prints the processed / failed / running (host, pid, job and age)
/ pending counts, and each failure with its reason. It reads only: nothing is written.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wsi_core.errors import ConfigError, WsiHeatmapsError

from .claims import DEFAULT_LOCK_TIMEOUT, ClaimInfo, claim_is_stale, read_claim
from .config import HeatmapConfig, load_config
from .layout import autogen_process_list_path, results_csv_path
from .process_list import read_process_list
from .state import read_state

__all__ = ["CohortStatus", "config_status", "main"]


@dataclass
class CohortStatus:
    """Where each selected slide of a config stands (slide ids; failures with their reason;
    running slides with their claim)."""

    processed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    running: list[tuple[str, ClaimInfo]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    results_csv: Path | None = None


def _selected(cfg: HeatmapConfig) -> tuple[pd.DataFrame, Path | None]:
    from .process_list import initialize_process_list, load_preset

    autogen = autogen_process_list_path(cfg)
    if cfg.data_arguments.process_list is None and autogen.is_file():   # built in memory or from data_dir
        df, pl_path = initialize_process_list(pd.read_csv(autogen), load_preset(cfg.data_arguments.preset)), None
    else:
        df, pl_path = read_process_list(cfg.data_arguments)
    selected = df["process"].astype(float).astype(int) == 1
    return df[selected].reset_index(drop=True), pl_path


def config_status(cfg: HeatmapConfig, *, assemble: bool = False) -> CohortStatus:
    """The status of ``cfg``'s run; ``assemble``: also (re)write its results CSV from the states.

    Raises:
        ConfigError: the process list cannot be read.
    """
    from .results import ResultsBook
    from .run import plan_jobs

    todo, pl_path = _selected(cfg)
    jobs = plan_jobs(cfg, todo)
    st = CohortStatus(results_csv=results_csv_path(cfg, pl_path))
    for job in jobs:
        claim = read_claim(job.claim)
        state = read_state(job.state)
        if claim is not None:
            st.running.append((job.slide_id, claim))
        elif state is None:
            st.pending.append(job.slide_id)
        elif state.status == "processed":
            st.processed.append(job.slide_id)
        else:
            st.failed.append((job.slide_id, state.reason or ""))
    if assemble:
        names = {v: k for k, v in cfg.data_arguments.label_dict.items()}
        ResultsBook(todo, results_csv=st.results_csv, class_names=names, n_classes=cfg.exp_arguments.n_classes,
                    state_paths=[j.state for j in jobs], assemble_each=False).assemble()
    return st


def format_status(st: CohortStatus, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> list[str]:
    """The printed lines: counts, each running slide, each failure."""
    lines = [f"{len(st.processed)} processed, {len(st.failed)} failed, {len(st.running)} running, "
             f"{len(st.pending)} pending"]
    for sid, claim in st.running:
        stale = claim_is_stale(claim, lock_timeout=lock_timeout)
        lines.append(f"  running {sid}: {claim.describe()}" + (f" - stale ({stale}): the next worker takes it over" if stale else ""))
    for sid, reason in st.failed:
        lines.append(f"  failed  {sid}: {reason}")
    if st.results_csv is not None:
        lines.append(f"results: {st.results_csv}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``create-heatmaps status RUN_DIR [--lock_timeout S]``. Exit status: 0 printed, 1 bad RUN_DIR."""
    p = argparse.ArgumentParser(prog="create-heatmaps status",
                                description="processed / failed / running / pending slides of a run, across its workers")
    p.add_argument("run_dir", metavar="RUN_DIR", help="{raw_save_dir}/{save_exp_code}: the folder holding the run's config.yaml")
    p.add_argument("--lock_timeout", type=float, default=DEFAULT_LOCK_TIMEOUT,
                   help="claims older than this (s) are shown as stale (default 48 h)")
    args = p.parse_args(argv)
    try:
        cfg_path = Path(args.run_dir) / "config.yaml"
        if not cfg_path.is_file():
            raise ConfigError(f"{args.run_dir}: no config.yaml here; give the run folder {{raw_save_dir}}/{{save_exp_code}}")
        st = config_status(load_config(cfg_path))
    except WsiHeatmapsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(format_status(st, lock_timeout=args.lock_timeout)))
    return 0
