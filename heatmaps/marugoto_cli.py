"""``create-heatmaps-marugoto``: Marugoto-style attention and class-score maps of several slides on
ONE colour scale, no YAML (also ``create-heatmaps -m MODEL -o DIR -t CLASS SLIDE ...``).

A thin front end on the YAML pipeline: the flags become a config in memory
(``heatmap_arguments.score_maps: true``, ``normalize_across_slides: true``, ``true_class``, the
thresholds and colormaps) and the slides an in-memory process list, run by
:func:`heatmaps.run.run_config`. Flag -> config key:

=========================  ==========================================================
``-m MODEL``               ``model_arguments.ckpt_path`` (a MIL checkpoint, ``--model_type``)
``-o OUTPUT_DIR``          outputs (layout in :func:`heatmaps.layout.seed_exp_arguments`)
``-t TRUE_CLASS``          ``heatmap_arguments.true_class``: an index 0..C-1, or a name of ``--label_dict``
``--no-pool``              ``encoder_arguments.fully_convolutional: true``
``--mask-threshold N``     ``heatmap_arguments.mask_threshold`` (0-255 grey)
``--att-upper-threshold``  ``heatmap_arguments.att_upper_threshold`` (quantile, 0-1)
``--att-lower-threshold``  ``heatmap_arguments.att_lower_threshold`` (quantile, 0-1)
``--score-threshold``      ``heatmap_arguments.score_threshold`` (quantile, 0-1)
``--att-cmap``/``--score-cmap``  ``heatmap_arguments.att_cmap`` / ``score_cmap``
``--cache-dir DIR``        ``exp_arguments.cache_dir``
=========================  ==========================================================
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from wsi_core.errors import ConfigError

from .cli_args import (add_dry_run_argument, add_model_arguments, add_render_arguments, add_run_arguments,
                       check_label_dict, parse_label_dict, setup_logging)
from .command import run_in_memory
from .layout import SEED_EXP_CODE, seed_exp_arguments

__all__ = ["add_marugoto_arguments", "build_parser", "main", "run_marugoto", "resolve_true_class",
           "build_marugoto_config"]

log = logging.getLogger(__name__)
MARUGOTO_OVERLAP = 0.9          # as the high-resolution mode of one slide


def add_marugoto_arguments(p: argparse.ArgumentParser, *, standalone: bool) -> None:
    """The Marugoto flags. ``standalone`` (``create-heatmaps-marugoto``): ``-m``, ``-o``, ``-t`` and
    one SLIDE at least are required; inside ``create-heatmaps`` ``-m`` selects this mode and the
    others are checked then."""
    g = p.add_argument_group("Marugoto-style maps of several slides on one colour scale"
                             + ("" if standalone else " (with -m)"))
    g.add_argument("-m", "--model", required=standalone, metavar="MODEL", help="MIL checkpoint (see --model_type)")
    g.add_argument("-o", "--output-dir", dest="output_dir_m", required=standalone, metavar="OUTPUT_DIR",
                   help="output folder: maps in OUTPUT_DIR/results/Unspecified/, results.csv, raw/ (intermediate files)")
    g.add_argument("-t", "--true-class", dest="true_class", required=standalone, metavar="TRUE_CLASS",
                   help="class whose evidence is drawn: an index 0..C-1, or a name given in --label_dict")
    g.add_argument("--mask-threshold", type=int, metavar="N",
                   help="slide pixels at least this bright (0-255 grey) stay uncoloured (default: tissue contours only)")
    g.add_argument("--att-upper-threshold", type=float, metavar="Q",
                   help="attention quantile drawn at the top of --att-cmap (default 1.0)")
    g.add_argument("--att-lower-threshold", type=float, metavar="Q",
                   help="attention quantile drawn at the bottom of --att-cmap (default 0.01)")
    g.add_argument("--score-threshold", type=float, metavar="Q",
                   help="quantile of |score - chance| at the ends of --score-cmap (default 0.95)")
    g.add_argument("--att-cmap", metavar="CMAP", help="colormap of the attention map (default jet)")
    g.add_argument("--score-cmap", metavar="CMAP", help="colormap of the class score maps (default coolwarm)")
    g.add_argument("--cache-dir", metavar="DIR", help="feature cache reused across runs (exp_arguments.cache_dir)")
    g.add_argument("slides", nargs="+" if standalone else "*", metavar="SLIDE", help="slide files (or DICOM folders)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="create-heatmaps-marugoto",
        description="Marugoto-style attention and class score maps of several slides on one shared colour scale "
                    "(the same score has the same colour on every slide), no YAML.")
    add_dry_run_argument(p)
    add_run_arguments(p)
    g = p.add_argument_group("model and rendering")
    add_model_arguments(g)
    add_render_arguments(g)
    add_marugoto_arguments(p, standalone=True)
    return p


def resolve_true_class(true_class: str, label_dict: dict[str, int], n_classes: int, *, checkpoint: str) -> str | int:
    """``-t``: a ``label_dict`` name, or an index 0..n_classes-1 (its name when the classes are named).

    Raises:
        ConfigError: not a class of the checkpoint; lists the classes and how to name them.
    """
    if true_class in label_dict:
        return true_class
    if true_class.lstrip("-").isdigit() and 0 <= int(true_class) < n_classes:
        idx = int(true_class)
        names = {v: k for k, v in label_dict.items()}
        return names.get(idx, idx)
    classes = ", ".join(f"{k}={v}" for k, v in label_dict.items()) if label_dict else f"indices 0-{n_classes - 1}"
    hint = "" if label_dict else "; give --label_dict name=idx,... to use names"
    raise ConfigError(f"-t {true_class}: not a class of {checkpoint} ({n_classes} classes: {classes}){hint}")


def _slide_list(slides: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The process list of the given slides (file names) and their folders (``data_dir``).

    Raises:
        ConfigError: a slide that does not exist, or two slides with the same file name.
    """
    paths = [Path(s) for s in slides]
    missing = next((p for p in paths if not p.exists()), None)
    if missing is not None:
        raise ConfigError(f"SLIDE {missing}: file not found")
    names: dict[str, Path] = {}
    for p in paths:
        if p.name in names and names[p.name].resolve() != p.resolve():
            raise ConfigError(f"SLIDE {p} and {names[p.name]} have the same file name; outputs are named by it, "
                              "so rename one (or run them separately)")
        names[p.name] = p
    dirs = list(dict.fromkeys(str(p.resolve().parent) for p in names.values()))
    return pd.DataFrame({"slide_id": list(names)}), dirs


def build_marugoto_config(args: argparse.Namespace, model: Any, dirs: list[str]):
    """The in-memory config of a Marugoto request (see the module docstring for the mapping).

    Raises:
        ConfigError: bad ``-t``, ``--label_dict``, thresholds or colormaps (one line each).
    """
    from models import encoder_for_dim

    from .config import apply_overrides, parse_config

    label_dict = parse_label_dict(args.label_dict)
    n, ckpt = int(model.n_classes), str(args.model)
    check_label_dict(label_dict, n, checkpoint=ckpt)
    true_class = resolve_true_class(str(args.true_class), label_dict, n, checkpoint=ckpt)
    encoder = encoder_for_dim(int(model.in_dim)) if args.feature_extractor == "auto" else args.feature_extractor
    maps = {"att_upper_threshold": args.att_upper_threshold, "att_lower_threshold": args.att_lower_threshold,
            "score_threshold": args.score_threshold, "att_cmap": args.att_cmap, "score_cmap": args.score_cmap,
            "mask_threshold": args.mask_threshold}
    data = {
        "exp_arguments": {"n_classes": n, **seed_exp_arguments(args.output_dir_m), "cache_dir": args.cache_dir,
                          "batch_size": args.batch_size_extract, "batch_size_infer": args.batch_size_infer},
        "data_arguments": {"data_dir": dirs, "slide_ext": "", "preset": "presets/bwh_biopsy.csv", "label_dict": label_dict},
        "patching_arguments": {"patch_size": args.patch_size,
                               "overlap": args.overlap if args.overlap is not None else MARUGOTO_OVERLAP},
        "encoder_arguments": {"model_name": encoder, "weights_path": args.encoder_weights, "precision": args.precision,
                              "fully_convolutional": bool(args.fully_convolutional)},
        "model_arguments": {"ckpt_path": ckpt, "model_type": args.model_type, "model_size": None,
                            "embed_dim": int(model.in_dim)},
        "heatmap_arguments": {"vis_level": args.vis_level, "alpha": args.alpha, "cmap": args.cmap, "save_orig": False,
                              "score_maps": True, "normalize_across_slides": True, "true_class": true_class,
                              **{k: v for k, v in maps.items() if v is not None}},
        "sample_arguments": {"samples": []},
    }
    cfg = parse_config(data, source="create-heatmaps-marugoto")
    return apply_overrides(cfg, list(args.overrides), source="--set") if args.overrides else cfg


def run_marugoto(args: argparse.Namespace, *, parser: argparse.ArgumentParser | None = None) -> int:
    """Run the Marugoto request of parsed ``args`` (``create-heatmaps-marugoto``, or ``create-heatmaps -m``).

    Returns:
        The exit status: 0 every slide done (or a clean --dry-run), 1 a slide or the input failed,
        2 bad usage (``-m`` without ``-o``, ``-t`` or a SLIDE).
    """
    missing = [flag for flag, v in (("-m MODEL", args.model), ("-o OUTPUT_DIR", args.output_dir_m),
                                    ("-t TRUE_CLASS", args.true_class), ("SLIDE", args.slides)) if not v]
    if missing:
        if parser is not None:
            parser.print_usage(sys.stderr)
        print(f"{parser.prog if parser else 'create-heatmaps-marugoto'}: error: Marugoto maps need "
              f"{', '.join(missing)}", file=sys.stderr)
        return 2

    def prepare():
        df, dirs = _slide_list(list(args.slides))
        return df, lambda model: build_marugoto_config(args, model, dirs)

    return run_in_memory(args, source="create-heatmaps-marugoto", checkpoint=args.model, checkpoint_flag="-m",
                         prepare=prepare, outputs=Path(args.output_dir_m) / SEED_EXP_CODE)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``create-heatmaps-marugoto``. Exit status: 0 done, 1 failed, 2 bad usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    return run_marugoto(args, parser=parser)
