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

log = logging.getLogger(__name__)


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
    _add_highres_arguments(p)
    return p


def _add_highres_arguments(p: argparse.ArgumentParser) -> None:
    """The high-resolution flags (``--checkpoint``/``--scores`` with ``--slide`` and ``--output``)."""
    g = p.add_argument_group("high-resolution heatmap of one slide (no YAML needed)")
    g.add_argument("--checkpoint", help="MIL checkpoint: run the model on --slide and write --output")
    g.add_argument("--scores", help="re-render an existing blockmap / overlap / _coords.h5 on --slide (no model)")
    g.add_argument("--slide", help="the slide file (or DICOM folder)")
    g.add_argument("--output", help="output heatmap: .tiff/.tif (pyramidal, OpenSlide-readable), .png or .jpg")
    g.add_argument("--model_type", default="clam_sb", help="MIL architecture of --checkpoint (default clam_sb)")
    g.add_argument("--feature_extractor", default="auto",
                   help="encoder: auto (from the checkpoint's input width) or a registered encoder name "
                        "(an unknown name fails listing them)")
    g.add_argument("--encoder_weights", help="local encoder weights (else $<NAME>_CKPT_PATH, else the hub)")
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="encoder precision (default fp32 on CPU, bf16 on CUDA)")
    g.add_argument("--fully_convolutional", action="store_true", help="CNN encoders: one pass over large regions (fast, approximate)")
    g.add_argument("--vis_level", type=int, default=0, help="level of the output (0 = full resolution, -1 = best level for downsample 32)")
    g.add_argument("--patch_size", type=int, default=256, help="patch side at level 0 (px)")
    g.add_argument("--cmap", default="jet", help="matplotlib colormap")
    g.add_argument("--alpha", type=float, default=0.5, help="colour opacity over the slide")
    g.add_argument("--batch_size_extract", type=int, default=32, help="patches per encoder batch")
    g.add_argument("--batch_size_infer", type=int, default=512, help="patches per attention batch")
    g.add_argument("--roi", help="x1,y1,x2,y2 in level-0 px")
    g.add_argument("--raw_scores", action="store_true", help="TIFF output: also write the raw score map")


def highres_request(args: argparse.Namespace) -> highres.HighresRequest:
    """The typed request of ``--checkpoint``/``--scores`` mode.

    Raises:
        ConfigError: both or neither of --checkpoint / --scores, --slide or --output missing, a bad --roi.
    """
    if args.checkpoint and args.scores:
        raise ConfigError("give either --checkpoint (run the model) or --scores (re-render), not both")
    missing = [f"--{n}" for n in ("slide", "output") if not getattr(args, n)]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} required with --{'checkpoint' if args.checkpoint else 'scores'}")
    return highres.HighresRequest(
        slide=args.slide, output=args.output, checkpoint=args.checkpoint, scores=args.scores,
        model_type=args.model_type, feature_extractor=args.feature_extractor, encoder_weights=args.encoder_weights,
        precision=args.precision, fully_convolutional=bool(args.fully_convolutional), vis_level=args.vis_level,
        patch_size=args.patch_size, cmap=args.cmap, alpha=args.alpha, batch_size_extract=args.batch_size_extract,
        batch_size_infer=args.batch_size_infer, roi=highres.parse_roi(args.roi), raw_scores=bool(args.raw_scores),
        overlap=args.overlap, overrides=tuple(args.overrides))


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
        req = highres_request(args)
        if req.scores:
            highres.rerender(req)
        else:
            highres.run_highres(req, device=args.device, force=args.force, progress=not args.quiet)
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
