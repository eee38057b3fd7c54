"""``generate-heatmaps`` / ``generate_heatmaps.py``: standard heatmaps of a cohort from pre-extracted
features (TRIDENT or CLAM ``{slide_id}.h5`` with ``features`` and ``coords``), no YAML.

A thin front end on the YAML pipeline: the flags become a config in memory and the slides an
in-memory process list, run by :func:`heatmaps.run.run_config`:

* ``data_arguments.features_dir`` = ``--h5_dir``: each slide's bag is its own feature file;
* ``data_arguments.data_dir`` = ``--slide_dir``, ``slide_ext`` = ``--slide_ext``;
* ``patching_arguments.overlap: 0`` and ``calc_heatmap: true``: the heatmap's patches are the
  non-overlapping grid (with a complete bag nothing needs encoding); ``patch_size`` is the feature
  files' level-0 patch side (TRIDENT ``patch_size_level0``, CLAM ``patch_size`` at level 0; 256
  when the files do not say);
* ``n_classes`` and ``embed_dim`` read from the checkpoint;
* the process list: every ``{slide_id}.h5`` of ``--h5_dir`` (also ``h5_files/``) whose slide
  ``{slide_id}{slide_ext}`` is in ``--slide_dir``, sorted, the first ``--limit`` of them;
* outputs under ``--output_dir`` (:func:`heatmaps.layout.seed_exp_arguments`):
  ``results.csv``, ``results/{label}/`` (heatmaps), ``raw/`` (blockmaps, fine-pass H5, contours).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from wsi_core.errors import ConfigError, FeatureFileError
from wsi_core.formats import read_coords_h5

from .cli_args import (add_dry_run_argument, add_model_arguments, add_run_arguments, check_label_dict,
                       parse_label_dict, setup_logging)
from .command import run_in_memory
from .layout import SEED_EXP_CODE, seed_exp_arguments

__all__ = ["build_parser", "main", "cohort_process_list", "feature_patch_size", "build_cohort_config"]

log = logging.getLogger(__name__)
DEFAULT_PATCH_SIZE = 256        # CLAM's, when a feature file does not record its patch size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="generate-heatmaps",
        description="Standard (CLAM) heatmaps of a cohort from pre-extracted features (TRIDENT or CLAM .h5 "
                    "with features + coords), no YAML.")
    g = p.add_argument_group("cohort")
    g.add_argument("--checkpoint", required=True, help="MIL checkpoint (see --model_type)")
    g.add_argument("--h5_dir", "--features_dir", dest="h5_dir", required=True,
                   help="folder of {slide_id}.h5 feature files (features (N, D), coords (N, 2) level-0 px); "
                        "an h5_files/ sub-folder is also read")
    g.add_argument("--slide_dir", required=True, help="folder of the slides {slide_id}{slide_ext}")
    g.add_argument("--output_dir", required=True,
                   help="output folder: results.csv, results/{label}/ (heatmaps), raw/ (blockmaps and other "
                        "intermediate files)")
    g.add_argument("--slide_ext", default=".svs", help="slide file extension (default .svs)")
    g.add_argument("--limit", type=int, metavar="N", help="only the first N slides (sorted by slide_id)")
    add_model_arguments(g)
    add_dry_run_argument(p)
    add_run_arguments(p)
    return p


def _feature_files(h5_dir: Path) -> dict[str, Path]:
    """``{slide_id: path}`` of the ``.h5`` files in ``h5_dir`` (else its ``h5_files/``)."""
    for d in (h5_dir, h5_dir / "h5_files"):
        files = {p.stem: p for p in sorted(d.glob("*.h5"))}
        if files:
            return files
    return {}


def cohort_process_list(h5_dir: str | Path, slide_dir: str | Path, *, slide_ext: str,
                        limit: int | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """The process list (``slide_id`` column, sorted) of the feature files that have a slide, and
    the feature files used. Feature files without a slide are listed in one warning line.

    Raises:
        ConfigError: a folder is missing, there is no ``.h5`` file, no feature file has a slide, or
        ``limit`` < 1.
    """
    h5_dir, slide_dir = Path(h5_dir), Path(slide_dir)
    for flag, d in (("--h5_dir", h5_dir), ("--slide_dir", slide_dir)):
        if not d.is_dir():
            raise ConfigError(f"{flag} {d}: not a directory")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: give a number of slides >= 1")
    files = _feature_files(h5_dir)
    if not files:
        raise ConfigError(f"--h5_dir {h5_dir}: no .h5 feature files (looked in it and in its h5_files/)")
    ext = slide_ext if slide_ext.startswith(".") or not slide_ext else "." + slide_ext
    have = {sid: f for sid, f in files.items() if (slide_dir / f"{sid}{ext}").exists()}
    orphans = sorted(set(files) - set(have))
    if not have:
        raise ConfigError(f"--slide_dir {slide_dir}: no slide {{slide_id}}{ext} for any of the {len(files)} feature "
                          f"files in {h5_dir} (e.g. {orphans[0]}{ext}); check --slide_dir and --slide_ext")
    if orphans:
        shown = ", ".join(orphans[:5]) + (f" and {len(orphans) - 5} more" if len(orphans) > 5 else "")
        log.warning("%d feature file%s in %s ha%s no slide {slide_id}%s in %s, skipped: %s", len(orphans),
                    "s" if len(orphans) != 1 else "", h5_dir, "ve" if len(orphans) != 1 else "s", ext, slide_dir, shown)
    ids = sorted(have)[:limit]
    return pd.DataFrame({"slide_id": ids}), [have[s] for s in ids]


def feature_patch_size(paths: list[Path]) -> int:
    """The level-0 patch side (px) the feature files were cut at: TRIDENT's ``patch_size_level0``,
    else CLAM's ``patch_size`` when ``patch_level`` is 0 (or absent); 256 when no file says.

    Raises:
        FeatureFileError: the files disagree (names two of them), or a CLAM file cut at a level > 0
        without ``patch_size_level0``.
    """
    sizes: dict[int, Path] = {}
    for path in paths:
        _, attrs = read_coords_h5(path)
        if "patch_size_level0" in attrs:
            size = int(attrs["patch_size_level0"])
        elif "patch_size" in attrs:
            if int(attrs.get("patch_level", 0)) != 0:
                raise FeatureFileError(f"{path}: patches cut at level {int(attrs['patch_level'])} and no "
                                       "patch_size_level0 attribute; give --set patching_arguments.patch_size=<level-0 px>")
            size = int(attrs["patch_size"])
        else:
            continue
        sizes.setdefault(size, path)
    if len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise FeatureFileError(f"feature files disagree on the patch size: {pa} {a} px, {pb} {b} px (level 0); "
                               "run the cohorts separately")
    return next(iter(sizes), DEFAULT_PATCH_SIZE)


def build_cohort_config(args: argparse.Namespace, model: Any, patch_size: int):
    """The in-memory config of a ``generate-heatmaps`` request (see the module docstring).

    Raises:
        ConfigError: bad ``--label_dict`` or ``--set``.
    """
    from .config import apply_overrides, parse_config

    label_dict = parse_label_dict(args.label_dict)
    check_label_dict(label_dict, int(model.n_classes), checkpoint=str(args.checkpoint))
    data = {
        "exp_arguments": {"n_classes": int(model.n_classes), **seed_exp_arguments(args.output_dir),
                          "batch_size": args.batch_size_extract, "batch_size_infer": args.batch_size_infer},
        "data_arguments": {"data_dir": str(args.slide_dir), "slide_ext": args.slide_ext, "features_dir": str(args.h5_dir),
                           "preset": "presets/bwh_biopsy.csv", "label_dict": label_dict},
        "patching_arguments": {"patch_size": patch_size, "patch_level": 0,
                               "overlap": args.overlap if args.overlap is not None else 0.0},
        "encoder_arguments": {"model_name": args.feature_extractor, "weights_path": args.encoder_weights,
                              "precision": args.precision, "fully_convolutional": bool(args.fully_convolutional)},
        "model_arguments": {"ckpt_path": str(args.checkpoint), "model_type": args.model_type, "model_size": None,
                            "embed_dim": int(model.in_dim)},
        "heatmap_arguments": {"calc_heatmap": True},
        "sample_arguments": {"samples": []},
    }
    cfg = parse_config(data, source="generate-heatmaps")
    return apply_overrides(cfg, list(args.overrides), source="--set") if args.overrides else cfg


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``generate-heatmaps``. Exit status: 0 every slide done (or a clean
    --dry-run), 1 a slide or the input failed, 2 bad usage."""
    args = build_parser().parse_args(argv)
    setup_logging(args)

    def prepare():
        df, files = cohort_process_list(args.h5_dir, args.slide_dir, slide_ext=args.slide_ext, limit=args.limit)
        return df, lambda model: build_cohort_config(args, model, feature_patch_size(files))

    return run_in_memory(args, source="generate-heatmaps", checkpoint=args.checkpoint, checkpoint_flag="--checkpoint",
                         prepare=prepare, outputs=Path(args.output_dir) / SEED_EXP_CODE)
