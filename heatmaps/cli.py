"""Command line of ``create_heatmaps.py`` / ``create-heatmaps``: parse arguments, call :mod:`heatmaps.run`.

CLAM's flags keep working (``--config_file``, ``--save_exp_code``, ``--overlap``); ``--config``
takes several YAML files, run one after another. ``--checkpoint``/``--scores`` with ``--slide`` and
``--output`` is the high-resolution mode of one slide (also ``generate-heatmaps-highres``, see
:func:`main_highres`); ``-m MODEL -o DIR -t CLASS SLIDE ...`` the Marugoto-style maps of
:mod:`heatmaps.marugoto_cli`. It never prompts.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from wsi_core.errors import ConfigError, WsiHeatmapsError

from . import highres
from .cli_args import (add_dry_run_argument, add_model_arguments, add_render_arguments, add_run_arguments,
                       add_worker_arguments, parse_label_dict, print_plan, setup_logging)
from .config import HeatmapConfig, apply_overrides, load_config
from .light import require_full_install
from .marugoto_cli import add_marugoto_arguments, run_marugoto
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
    add_dry_run_argument(p)
    add_run_arguments(p)
    add_worker_arguments(p)
    add_highres_arguments(p)
    add_marugoto_arguments(p, standalone=False)
    return p


def add_highres_arguments(p: argparse.ArgumentParser) -> None:
    """The high-resolution flags (``--checkpoint``/``--scores`` with ``--slide`` and ``--output``),
    shared by ``create-heatmaps`` and ``generate-heatmaps-highres``."""
    g = p.add_argument_group("high-resolution heatmap of one slide (no YAML needed)")
    g.add_argument("--checkpoint", help="MIL checkpoint: run the model on --slide and write --output")
    g.add_argument("--scores", help="re-render an existing blockmap / overlap / _coords.h5 on --slide (no model)")
    g.add_argument("--slide", help="the slide file (or DICOM folder)")
    g.add_argument("--output", help="output heatmap: .tiff/.tif (pyramidal, OpenSlide-readable), .png or .jpg. "
                                    "With --checkpoint the run's intermediate files (features, blockmap and "
                                    "fine-pass H5, tissue contours, effective config) go to {output stem}_work/ "
                                    "beside it; a rerun reuses them; delete the folder once the heatmap is written")
    add_model_arguments(g)
    add_render_arguments(g)
    g.add_argument("--roi", help="x1,y1,x2,y2 in level-0 px: only this region is computed; a TIFF keeps the "
                                 "slide's geometry (empty, transparent tiles outside the ROI)")
    g.add_argument("--raw_scores", action="store_true", help="TIFF output: also write the raw score map")
    g.add_argument("--tiff_background", choices=("empty", "slide"), default="empty",
                   help="TIFF output: 'empty' (default) stores the tiles without heatmap colour as zero-byte tiles, "
                        "transparent in OpenSlide >= 4 and not read from the slide (fast); 'slide' keeps the slide there")
    g.add_argument("--geojson", action="store_true",
                   help="also write {output stem}_tiles.geojson (the patches as QuPath tiles with their attention) "
                        "and {output stem}_tissue_annotations.geojson")
    g.add_argument("--dsa", action="store_true",
                   help="also write {output stem}_dsa_annotation.json: the attention percentiles as a Digital Slide "
                        "Archive / HistomicsUI heatmap annotation (large_image annotation JSON, level-0 px)")


def highres_request(args: argparse.Namespace) -> highres.HighresRequest:
    """The typed request of ``--checkpoint``/``--scores`` mode.

    Raises:
        ConfigError: both or neither of --checkpoint / --scores, --slide or --output missing, a bad
        --roi or --label_dict.
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
        batch_size_infer=args.batch_size_infer, roi=highres.parse_roi(args.roi), raw_scores=bool(args.raw_scores), geojson=bool(args.geojson),
        tiff_background=args.tiff_background,
        dsa=bool(args.dsa),
        overlap=args.overlap, overrides=tuple(args.overrides), label_dict=parse_label_dict(args.label_dict))


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
    cfg = apply_overrides(cfg, overrides, source=f"{path} (command-line overrides)") if overrides else cfg
    _check_demo_assets(cfg, path)
    return cfg


DEMO_CONFIG = PACKAGE_DIR / "configs" / "demo.yaml"


def _check_demo_assets(cfg: HeatmapConfig, path: Path) -> None:
    """``heatmaps/configs/demo.yaml`` runs on files that ``create-heatmaps --demo`` generates.

    Raises:
        ConfigError: it is the demo config and one of its generated inputs (process list,
        checkpoint, encoder weights) is missing: one line saying to run ``--demo`` first.
    """
    if path.resolve() != DEMO_CONFIG.resolve():
        return
    needed = (cfg.data_arguments.process_list, cfg.model_arguments.ckpt_path, cfg.encoder_arguments.weights_path)
    missing = next((p for p in needed if p and not Path(p).is_file()), None)
    if missing is not None:
        raise ConfigError(f"{path}: the demo's generated inputs are missing ({missing}); run create-heatmaps --demo "
                          "first (it makes them offline and runs this config)")


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


def build_highres_parser() -> argparse.ArgumentParser:
    """``generate-heatmaps-highres``: the high-resolution flags of ``create-heatmaps``, nothing else."""
    p = argparse.ArgumentParser(
        prog="generate-heatmaps-highres",
        description="High-resolution attention heatmap of one slide, no YAML: the same flags and outputs as "
                    "create-heatmaps --checkpoint/--scores --slide --output.")
    add_run_arguments(p)
    add_highres_arguments(p)
    return p


def main_highres(argv: list[str] | None = None) -> int:
    """Entry point of ``generate-heatmaps-highres``. Exit status: 0 done, 1 bad input, 2 bad usage."""
    parser = build_highres_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    if not (args.checkpoint or args.scores):
        parser.print_usage(sys.stderr)
        print("generate-heatmaps-highres: error: give --checkpoint CKPT (or --scores H5) with --slide and --output",
              file=sys.stderr)
        return 2
    return _main_highres(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point. Exit status: 0 all slides done (or a clean --dry-run plan), 1 some slide or
    config failed (or --dry-run found a problem), 2 bad usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    if args.model or args.slides:
        return run_marugoto(args, parser=parser)
    if args.checkpoint or args.scores:
        return _main_highres(args)
    configs = list(args.configs or [])
    if configs or args.demo:
        try:
            require_full_install("create-heatmaps " + ("--demo" if args.demo else "--config"))
        except WsiHeatmapsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.demo:
        from .demo import ensure_demo_assets

        ensure_demo_assets()
        configs.insert(0, str(PACKAGE_DIR / "configs" / "demo.yaml"))
    if not configs:
        parser.print_usage(sys.stderr)
        print("create-heatmaps: error: give --config YAML [YAML ...], --demo, --checkpoint CKPT --slide SLIDE "
              "--output OUT, or -m MODEL -o DIR -t CLASS SLIDE ...", file=sys.stderr)
        return 2
    if not args.worker and not args.dry_run and (args.workers > 1 or args.gpus or args.executor):
        return _launch(configs, args, argv if argv is not None else sys.argv[1:])
    from .run import WorkerOptions, dry_run, run_config
    from .workers import env_shard, parse_shard

    failed = False
    try:
        shard = parse_shard(args.shard) if args.shard else env_shard()
    except WsiHeatmapsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    worker = WorkerOptions(shard=shard, multi=bool(args.worker) or shard is not None, lock_timeout=args.lock_timeout,
                           lock_method=args.lock_method)
    for name in configs:
        try:
            cfg = _load(name, args)
            if args.dry_run:
                failed |= not print_plan(dry_run(cfg, source=name))
                continue
            summary = run_config(cfg, source=name, force=args.force, progress=not args.quiet, device=args.device,
                                 worker=worker)
        except WsiHeatmapsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        done = len(summary.processed)
        maps = Path(cfg.exp_arguments.production_save_dir) / cfg.exp_arguments.save_exp_code
        log.info("%s: %d slides processed, %d failed, %d patches encoded, %.1f s; heatmaps in %s; results: %s",
                 name, done, len(summary.failed), summary.n_encoded, summary.seconds, maps, summary.results_csv)
        failed |= bool(summary.failed)
    return 1 if failed else 0


def _launch(configs: list[str], args: argparse.Namespace, argv: list[str]) -> int:
    """``--workers N`` / ``--gpus`` / ``--executor``: start the workers (:mod:`heatmaps.workers`),
    wait, then assemble each config's results CSV and print one summary line per config."""
    from .claims import new_run_id
    from .cohort_status import config_status
    from .layout import effective_config_path
    from .workers import SlurmOptions, launch_local, launch_slurm, slurm_minutes

    try:
        cfgs = [_load(name, args) for name in configs]       # a bad config stops here, before any worker
        for name, cfg in zip(configs, cfgs):
            h = cfg.heatmap_arguments
            if h.score_maps and h.normalize_across_slides:
                raise ConfigError(f"{name}: heatmap_arguments.normalize_across_slides fits one scale on every slide, "
                                  "which needs them in one process; run without --workers/--gpus/--executor or set it to false")
        run_id = new_run_id()
        if args.executor == "slurm":
            opts = SlurmOptions(partition=args.slurm_partition, minutes=slurm_minutes(args.slurm_time), mem=args.slurm_mem,
                                gpus_per_task=args.slurm_gpus_per_task, array_parallelism=args.slurm_array_parallelism,
                                additional=SlurmOptions.parse_additional(args.slurm_additional))
            log_dir = effective_config_path(cfgs[0]).parent / "slurm"
            _, codes = launch_slurm(argv, tasks=max(1, args.workers), options=opts, log_dir=log_dir, run_id=run_id)
        else:
            _, codes = launch_local(argv, workers=max(1, args.workers), gpus=args.gpus, run_id=run_id)
        failed = any(code != 0 for code in codes)
        for name, cfg in zip(configs, cfgs):
            st = config_status(cfg, assemble=True)
            print(f"{name}: {len(st.processed)} processed, {len(st.failed)} failed, {len(st.running)} running, "
                  f"{len(st.pending)} pending (run {run_id}, {len(codes)} workers); results: {st.results_csv}")
            failed |= bool(st.failed or st.pending or st.running)
    except WsiHeatmapsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0
