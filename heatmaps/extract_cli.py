"""``extract-features`` / ``create-heatmaps extract``: cohort feature extraction, the training bags.

Per slide of a folder (``--data_dir``) or process list: the heatmap pipeline's tissue
segmentation (CLAM defaults, ``--preset``, per-slide process-list columns), the non-overlapping
patch grid at ``--patch_level``, the registry's encoder through the one encode loop, written as

* CLAM: ``{feat_dir}/h5_files/{slide_id}.h5`` (``features``, ``coords``) and ``pt_files/{slide_id}.pt``;
* TRIDENT: ``{feat_dir}/features_{encoder}/{slide_id}.h5`` (TRIDENT's four ``coords`` attributes).

The ``features`` dataset carries what made them (``encoder``, ``weights_source``,
``weights_sha256``, ``target_img_size``, ``patch_size``, ``patch_level``, ``custom_downsample``,
``precision``, ``level0_magnification``, ``target_magnification``): the attributes the heatmap
pipeline compares before reusing features, so its runs on these files encode nothing at
overlap 0. Resumable: a slide whose files exist with the same attributes is skipped. One bad
slide is reported and the run goes on (exit 1 at the end when any failed).

It lives in ``heatmaps/`` because it needs the heatmap config's segmentation and patching keys,
presets and process lists (``heatmaps.config``, ``heatmaps.process_list``, ``heatmaps.tissue``,
``heatmaps.context.encode``); ``models/`` may not import them.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from wsi_core.errors import WsiHeatmapsError
from wsi_core.formats import validate_bag, write_features_h5, write_trident_features_h5
from wsi_core.slide import Slide
from wsi_core.tissue import segment_tissue

from .config import apply_overrides, parse_config
from .context import RunContext, encode
from .process_list import read_process_list, slide_task
from .tissue import grid

__all__ = ["main", "build_parser", "extract_slide"]

log = logging.getLogger(__name__)

ATTR_KEYS = ("encoder", "weights_sha256", "target_img_size", "patch_size", "patch_level", "custom_downsample",
             "precision")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="extract-features", description="Extract patch features of a cohort of slides.")
    p.add_argument("--data_dir", required=True, help="slide folder")
    p.add_argument("--process_list", help="CSV with slide_id (and optional segmentation columns); default: every slide")
    p.add_argument("--slide_ext", default=".svs")
    p.add_argument("--preset", help="segmentation preset CSV (CLAM presets/*.csv)")
    p.add_argument("--feat_dir", required=True, help="output folder")
    p.add_argument("--layout", choices=["clam", "trident", "both"], default="clam")
    p.add_argument("--patch_size", type=int, default=256)
    p.add_argument("--patch_level", type=int, default=0)
    p.add_argument("--model_name", default="resnet50_trunc", help="encoder of the registry")
    p.add_argument("--target_img_size", type=int)
    p.add_argument("--weights_path", help="local encoder weights (else $<NAME>_CKPT_PATH, else the hub)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any heatmap-config key, e.g. --set encoder_arguments.precision=bf16")
    p.add_argument("--quiet", action="store_true")
    return p


def _config(args: argparse.Namespace):
    cfg = parse_config({
        "exp_arguments": {"batch_size": args.batch_size, "raw_save_dir": str(Path(args.feat_dir) / ".raw"),
                          "production_save_dir": str(Path(args.feat_dir) / ".prod")},
        "data_arguments": {"data_dir": args.data_dir, "process_list": args.process_list, "slide_ext": args.slide_ext,
                           "preset": args.preset},
        "patching_arguments": {"patch_size": args.patch_size, "patch_level": args.patch_level, "overlap": 0.0},
        "encoder_arguments": {"model_name": args.model_name, "target_img_size": args.target_img_size,
                              "weights_path": args.weights_path},
        "model_arguments": {"ckpt_path": "(extraction: no MIL model)"},
    }, source="extract-features")
    return apply_overrides(cfg, args.overrides) if args.overrides else cfg


def _magnification(slide: Slide, patch_level: int) -> tuple[float, float]:
    """(level-0 magnification, magnification at patch_level): 10 / mpp (0.25 µm/px = 40x), or
    OpenSlide's objective power; 0 when neither is known."""
    if slide.mpp:
        mag0 = 10.0 / float(slide.mpp[0])
    else:
        mag0 = float(slide.properties.get("openslide.objective-power", 0) or 0)
    return mag0, mag0 / float(slide.level_downsamples[patch_level][0])


def _paths(feat_dir: Path, slide_id: str, encoder: str, layout: str) -> dict[str, Path]:
    out = {}
    if layout in ("clam", "both"):
        out["clam_h5"] = feat_dir / "h5_files" / f"{slide_id}.h5"
        out["clam_pt"] = feat_dir / "pt_files" / f"{slide_id}.pt"
    if layout in ("trident", "both"):
        out["trident_h5"] = feat_dir / f"features_{encoder}" / f"{slide_id}.h5"
    return out


def _done(paths: dict[str, Path], attrs: dict) -> bool:
    """Every file exists and each H5's ``features`` attributes match this run's."""
    if not all(p.is_file() for p in paths.values()):
        return False
    for p in paths.values():
        if p.suffix != ".h5":
            continue
        try:
            with h5py.File(p, "r") as f:
                have = dict(f["features"].attrs)
        except (OSError, KeyError):
            return False
        if any(str(have.get(k)) != str(attrs[k]) for k in ATTR_KEYS):
            return False
    return True


def extract_slide(ctx: RunContext, row, feat_dir: Path, layout: str) -> tuple[str, int]:
    """Extract one process-list row; returns ``(status, patches encoded)`` (status ``done`` or
    ``skipped (complete)``).

    Raises:
        WsiHeatmapsError: unreadable slide, no tissue, encoder problems.
    """
    cfg = ctx.cfg
    task = slide_task(row, cfg.data_arguments, use_roi=False)
    enc = ctx.encoder()
    attrs = ctx.encoder_attrs()
    paths = _paths(feat_dir, task.slide_id, enc.name, layout)
    if _done(paths, attrs):
        return "skipped (complete)", 0
    slide = Slide(task.slide_path)
    contours = segment_tissue(slide, task.seg_params)
    coords = grid(cfg, slide, contours, step=cfg.patching_arguments.patch_size, roi=None)
    if len(coords) == 0:
        raise WsiHeatmapsError(f"slide {task.slide_id}: no {cfg.patching_arguments.patch_size}-px patch fits in the tissue; "
                               "lower --patch_size or the preset's a_t")
    fb = validate_bag(encode(ctx, slide, coords, use_cache=False), coords, source=f"slide {task.slide_id}")
    mag0, mag = _magnification(slide, cfg.patching_arguments.patch_level)
    attrs = {**attrs, "level0_magnification": mag0, "target_magnification": mag}
    if "clam_h5" in paths:
        from models.pt_features import write_pt_features

        write_features_h5(paths["clam_h5"], fb.features, fb.coords, attrs=attrs)
        write_pt_features(paths["clam_pt"], np.ascontiguousarray(fb.features))
    if "trident_h5" in paths:
        p = cfg.patching_arguments
        ds = float(slide.level_downsamples[p.patch_level][0])
        write_trident_features_h5(paths["trident_h5"], fb.features, fb.coords, patch_size=p.patch_size,
                                  patch_size_level0=int(round(p.patch_size * p.custom_downsample * ds)),
                                  level0_magnification=mag0, target_magnification=mag, attrs=attrs)
    return "done", len(coords)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        cfg = _config(args)
        df, _ = read_process_list(cfg.data_arguments)
        ctx = RunContext(cfg=cfg, model=None, class_names={}, device=args.device, progress=not args.quiet)
        ctx.encoder()
    except WsiHeatmapsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed, n_patches, t0 = 0, 0, time.perf_counter()
    for _, row in df.iterrows():
        try:
            status, n = extract_slide(ctx, row, Path(args.feat_dir), args.layout)
            n_patches += n
            log.info("%s: %s (%d patches)", row["slide_id"], status, n)
        except WsiHeatmapsError as exc:
            failed += 1
            log.error("%s: failed: %s", row["slide_id"], exc)
    dt = time.perf_counter() - t0
    log.info("%d slides, %d failed; %d patches encoded in %.1f s (%.1f patches/s)", len(df), failed, n_patches, dt,
             n_patches / dt if dt > 0 else 0.0)
    return 1 if failed else 0
