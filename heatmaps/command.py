"""Running a config built in memory from a command line (``generate-heatmaps``,
``create-heatmaps-marugoto``): load the checkpoint once to size the config, then dry-run or run it
over an in-memory process list with :func:`heatmaps.run.run_config`, and report in one line."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from wsi_core.errors import ConfigError, WsiHeatmapsError

from .cli_args import print_plan
from .light import require_full_install

__all__ = ["run_in_memory"]

log = logging.getLogger(__name__)


def run_in_memory(args: argparse.Namespace, *, source: str, checkpoint: str, checkpoint_flag: str,
                  prepare: Callable[[], tuple[pd.DataFrame, Callable[[Any], Any]]], outputs: Path) -> int:
    """``prepare()`` gives the process list and ``make_config(model)``; the checkpoint (named by
    ``checkpoint_flag`` in errors) is read to size the config; ``--dry-run`` prints the plan.

    Returns:
        The exit status: 0 every slide done (or a clean plan), 1 a slide or the input failed (each
        problem on one ``error:`` line).
    """
    try:
        require_full_install(source)
        from models.checkpoints import load_mil_checkpoint

        from .run import dry_run, run_config

        df, make_config = prepare()
        if not Path(checkpoint).is_file():
            raise ConfigError(f"{checkpoint_flag} {checkpoint}: checkpoint file not found")
        model = load_mil_checkpoint(checkpoint, model_type=args.model_type, device="cpu")
        cfg = make_config(model)
        if args.dry_run:
            return 0 if print_plan(dry_run(cfg, source=source, process_list=df)) else 1
        summary = run_config(cfg, source=source, force=args.force, progress=not args.quiet, device=args.device,
                             process_list=df, model=model)   # the checkpoint is read once
    except WsiHeatmapsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("%d slides processed, %d failed, %d patches encoded, %.1f s; maps in %s; results: %s",
             len(summary.processed), len(summary.failed), summary.n_encoded, summary.seconds, outputs,
             summary.results_csv)
    return 1 if summary.failed else 0
