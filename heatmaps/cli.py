"""Command line of ``create_heatmaps.py`` / ``create-heatmaps``: parse arguments, call :mod:`heatmaps.run`.

CLAM's flags keep working (``--config_file``, ``--save_exp_code``, ``--overlap``); ``--config``
takes several YAML files, run one after another. It never prompts.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from wsi_core.errors import ConfigError, WsiHeatmapsError

from . import highres
from .config import HeatmapConfig, apply_overrides, load_config
from .process_list import PACKAGE_DIR, resolve_input_file

# heatmaps.run (torch, the models) is imported only where a model runs: a --scores re-render stays
# without torch, 0.6 GB less resident memory and seconds less start-up.

log = logging.getLogger("wsi_heatmaps")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="create-heatmaps",
        description="CLAM-compatible attention heatmaps of MIL models on whole-slide images.")
    p.add_argument("--config", "--config_file", dest="configs", nargs="+", metavar="YAML",
                   help="one or more CLAM-style configs, run in order (bare names are looked up in heatmaps/configs/)")
    p.add_argument("--demo", action="store_true",
                   help="generate the embedded synthetic slide and demo model (offline) and run heatmaps/configs/demo.yaml")
    p.add_argument("--save_exp_code", help="override exp_arguments.save_exp_code")
    p.add_argument("--overlap", type=float, help="override patching_arguments.overlap")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set heatmap_arguments.alpha=0.5 (repeatable)")
    p.add_argument("--dry-run", "--dry_run", action="store_true",
                   help="validate every config, resolve every slide path and print the plan; run nothing")
    p.add_argument("--force", action="store_true", help="recompute slides whose outputs are already complete")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars; warnings and errors only")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    highres.add_arguments(p)
    return p


def _config_path(name: str) -> Path:
    return resolve_input_file(name, kind="config", search_dirs=[Path("heatmaps/configs"), PACKAGE_DIR / "configs"])


def _load(name: str, args: argparse.Namespace) -> HeatmapConfig:
    path = _config_path(name)
    cfg = load_config(path)
    overrides = list(args.overrides)
    if args.save_exp_code is not None:
        overrides.append(f"exp_arguments.save_exp_code={args.save_exp_code}")
    if args.overlap is not None:
        overrides.append(f"patching_arguments.overlap={args.overlap}")
    return apply_overrides(cfg, overrides, source=f"{path} (command-line overrides)") if overrides else cfg


def _main_highres(args: argparse.Namespace) -> int:
    """``--checkpoint/--scores --slide --output``: one slide, no YAML."""
    try:
        if args.checkpoint and args.scores:
            raise ConfigError("give either --checkpoint (run the model) or --scores (re-render), not both")
        if args.scores:
            highres.rerender(args)
            return 0
        from .run import run_config

        cfg = highres.build_config(args)
        if args.overrides:
            cfg = apply_overrides(cfg, args.overrides, source="--set")
        summary = run_config(cfg, source="command line", force=args.force, progress=not args.quiet, device=args.device)
        if summary.failed:
            print(f"error: {summary.failed[0][1]}", file=sys.stderr)
            return 1
        out = highres.finish_highres(cfg, args.output)
        log.info("heatmap: %s (patches: %s)", out, highres.coords_h5_path(out))
        return 0
    except WsiHeatmapsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point. Exit status: 0 all slides done, 1 some slide or config failed, 2 bad usage."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(message)s" if args.verbose else "%(message)s", stream=sys.stderr)
    if args.checkpoint or args.scores:
        return _main_highres(args)
    configs = list(args.configs or [])
    if args.demo:
        from .demo import ensure_demo_assets

        ensure_demo_assets()
        configs.insert(0, str(PACKAGE_DIR / "configs" / "demo.yaml"))
    if not configs:
        build_parser().print_usage(sys.stderr)
        print("create-heatmaps: error: give --config YAML [YAML ...] or --demo", file=sys.stderr)
        return 2
    from .run import dry_run, run_config

    failed = False
    for name in configs:
        try:
            cfg = _load(name, args)
            if args.dry_run:
                print("\n".join(dry_run(cfg, source=name)))
                continue
            summary = run_config(cfg, source=name, force=args.force, progress=not args.quiet, device=args.device)
        except WsiHeatmapsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        done = len(summary.processed)
        log.info("%s: %d slides processed, %d failed, %d patches encoded, %.1f s; results: %s",
                 name, done, len(summary.failed), summary.n_encoded, summary.seconds, summary.results_csv)
        failed |= bool(summary.failed)
    return 1 if failed else 0
