"""The command-line flags (and the plan printout) every front end shares, each defined once.

``create-heatmaps`` (:mod:`heatmaps.cli`), ``generate-heatmaps`` (:mod:`heatmaps.cohort_cli`),
``generate-heatmaps-highres`` and ``create-heatmaps-marugoto`` (:mod:`heatmaps.marugoto_cli`) build
their parsers from these groups, so a flag means the same thing (and has the same default) in every
command. Parsing only: nothing here imports torch or runs a model.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys

from wsi_core.errors import ConfigError

__all__ = ["setup_logging", "print_plan", "add_run_arguments", "add_worker_arguments", "add_dry_run_argument", "add_model_arguments", "add_render_arguments",
           "parse_label_dict", "check_label_dict", "HIGHRES_ALPHA"]

HIGHRES_ALPHA = 0.5     # the one-slide modes' default opacity (a YAML config's default is CLAM's 0.4)


def setup_logging(args: argparse.Namespace) -> None:
    """Log to stderr: INFO, WARNING with ``--quiet``, DEBUG with ``-v``."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(message)s" if args.verbose else "%(message)s", stream=sys.stderr)


def print_plan(plan) -> bool:
    """Print a :class:`heatmaps.run.DryRunPlan`: its lines to stdout, each error as one
    ``error:`` line to stderr. Returns whether the plan is clean (exit 0) or not (exit 1)."""
    print("\n".join(plan.lines))
    for problem in plan.errors:
        print(f"error: {problem}", file=sys.stderr)
    return plan.ok


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """``--overlap``, ``--set``, ``--force``, ``--device``, ``--quiet``, ``--verbose``, ``--version``."""
    from .version import package_version

    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                   help="print the installed wsi-heatmaps version and exit")
    p.add_argument("--overlap", type=float,
                   help="patching_arguments.overlap of the fine pass, 0 <= overlap < 1 (a YAML config: overrides "
                        "its value; --checkpoint and create-heatmaps-marugoto: default 0.9; generate-heatmaps: default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set heatmap_arguments.alpha=0.5 (repeatable)")
    p.add_argument("--force", action="store_true", help="recompute slides whose outputs are already complete")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress display; warnings and errors only")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """Cohort runs shared by several workers (:mod:`heatmaps.workers`, :mod:`heatmaps.claims`)."""
    g = p.add_argument_group("cohort runs: several workers, GPUs, SLURM (README: Cohort runs)")
    g.add_argument("--workers", type=int, default=1,
                   help="worker processes pulling slides through per-slide claims (default 1; with --executor slurm: "
                        "array tasks)")
    g.add_argument("--gpus", nargs="+", metavar="ID", help="one worker per GPU, each with its CUDA_VISIBLE_DEVICES")
    g.add_argument("--executor", choices=["local", "slurm"],
                   help="local: worker subprocesses here (the default with --workers/--gpus); slurm: one SLURM job "
                        "array through submitit, one worker per task")
    g.add_argument("--shard", metavar="i/n", help="this process takes only rows i, i+n, ... of each process list "
                                                  "(default inside your own SLURM job array: SLURM_ARRAY_TASK_ID / "
                                                  "SLURM_ARRAY_TASK_COUNT)")
    g.add_argument("--lock_timeout", type=float, default=48 * 3600.0, metavar="S",
                   help="a slide claim older than this many seconds is taken over even if its worker lives "
                        "(default 172800 = 48 h; a dead worker's claim on the same host is taken over at once)")
    g.add_argument("--lock_method", choices=["auto", "link", "excl"], default="auto",
                   help="how a claim is created atomically: link (NFS-safe), excl (O_CREAT|O_EXCL), auto (link, "
                        "else excl)")
    g.add_argument("--slurm_partition", help="SLURM partition")
    g.add_argument("--slurm_time", help="time limit per task: minutes, HH:MM:SS or D-HH:MM:SS (default 60 min)")
    g.add_argument("--slurm_mem", help="memory per task, e.g. 32G")
    g.add_argument("--slurm_gpus_per_task", type=int, help="GPUs per task")
    g.add_argument("--slurm_array_parallelism", type=int, help="at most this many array tasks at once")
    g.add_argument("--slurm_additional", action="append", metavar="KEY=VALUE",
                   help="another #SBATCH key, e.g. account=mylab (repeatable)")
    g.add_argument("--_worker", dest="worker", action="store_true", help=argparse.SUPPRESS)


def add_dry_run_argument(p: argparse.ArgumentParser) -> None:
    """``--dry-run``: resolve everything, run nothing, exit 1 when anything is in error."""
    p.add_argument("--dry-run", "--dry_run", action="store_true",
                   help="validate, resolve every slide path and print the plan; run nothing "
                        "(exit 1 when a config, the checkpoint or a slide is in error)")


def add_model_arguments(g: argparse._ActionsContainer) -> None:
    """The MIL model and the patch encoder: ``--model_type``, ``--label_dict``, ``--feature_extractor``,
    ``--encoder_weights``, ``--precision``, ``--fully_convolutional``/``--no-pool``, batch sizes."""
    g.add_argument("--model_type", default="clam_sb",
                   help="MIL architecture of the checkpoint: clam_sb (default), clam_mb, abmil, transmil, dsmil")
    g.add_argument("--label_dict", metavar="NAME=IDX,...",
                   help="class names of the checkpoint, e.g. LUAD=0,LSCC=1 (a bare checkpoint has none: "
                        "without it classes are shown by index)")
    g.add_argument("--feature_extractor", default="auto",
                   help="encoder: auto (from the checkpoint's input width) or a registered encoder name "
                        "(an unknown name fails listing them)")
    g.add_argument("--encoder_weights", help="local encoder weights (else $<NAME>_CKPT_PATH, else the hub)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="encoder precision (default auto: bf16 on CUDA and on CPUs with native bf16, else fp32; "
                        "fp32 for CLAM's exact features)")
    g.add_argument("--fully_convolutional", "--no-pool", dest="fully_convolutional", action="store_true",
                   help="CNN encoders: one pass over large regions, features pooled per patch window "
                        "(fast, approximate; encoder_arguments.fully_convolutional)")
    g.add_argument("--batch_size_extract", type=int, default=32, help="patches per encoder batch (default 32)")
    g.add_argument("--batch_size_infer", type=int, default=512, help="patches per attention batch (default 512)")


def add_render_arguments(g: argparse._ActionsContainer) -> None:
    """How a one-slide map is drawn: ``--vis_level``, ``--patch_size``, ``--cmap``, ``--alpha``."""
    g.add_argument("--vis_level", type=int, default=0,
                   help="level of the output (default 0 = full resolution; -1 = best level for downsample 32)")
    g.add_argument("--patch_size", type=int, default=256, help="patch side at level 0, px (default 256)")
    g.add_argument("--cmap", default="jet", help="matplotlib colormap (default jet)")
    g.add_argument("--alpha", type=float, default=HIGHRES_ALPHA,
                   help=f"colour opacity over the slide, 0-1 (default {HIGHRES_ALPHA} here; "
                        "a YAML config's heatmap_arguments.alpha defaults to CLAM's 0.4)")


_PAIR = re.compile(r"\s*([^=,]+?)\s*=\s*(-?\d+)\s*")


def parse_label_dict(text: str | None) -> dict[str, int]:
    """``'LUAD=0,LSCC=1'`` -> ``{'LUAD': 0, 'LSCC': 1}``; None or '' -> ``{}``.

    Raises:
        ConfigError: a pair that is not ``name=integer``, or a name or index given twice.
    """
    if not text:
        return {}
    out: dict[str, int] = {}
    for part in text.split(","):
        m = _PAIR.fullmatch(part)
        if m is None:
            raise ConfigError(f"--label_dict {text!r}: expected name=index pairs separated by commas, e.g. LUAD=0,LSCC=1")
        name, idx = m.group(1), int(m.group(2))
        if name in out or idx in out.values():
            raise ConfigError(f"--label_dict {text!r}: class '{name}' or index {idx} is given twice; give each once")
        out[name] = idx
    return out


def check_label_dict(label_dict: dict[str, int], n_classes: int, *, checkpoint: str) -> None:
    """Every index of ``label_dict`` must be a class of the checkpoint (0 .. n_classes - 1).

    Raises:
        ConfigError: names the index, the checkpoint and its class count.
    """
    bad = {k: v for k, v in label_dict.items() if not 0 <= v < n_classes}
    if bad:
        name, idx = next(iter(bad.items()))
        raise ConfigError(f"--label_dict: {name}={idx} is not a class of {checkpoint} ({n_classes} classes, "
                          f"indices 0-{n_classes - 1}); fix the index")
