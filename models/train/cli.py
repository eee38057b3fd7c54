"""``train-mil`` / ``python train_mil.py``: CLAM ``main.py``'s flags (same names and meanings) plus
``--config train.yaml``, ``--csv_path``, ``--label_dict``, ``--devices`` and ``--set
section.key=value``. Precedence: defaults < YAML < flags < ``--set``.

CLAM flags with a changed default: ``--k`` (CLAM: 10 Monte-Carlo folds; here the config's
``split.mode``: a 70/15/15 hold-out unless ``--k`` > 1 is given, which selects CLAM's
Monte-Carlo folds, or ``--split_mode kfold``).
"""
from __future__ import annotations

import argparse
import logging
import sys

from wsi_core.errors import WsiHeatmapsError

from .config import CLAM_FLAGS, TrainConfig, apply_overrides, load_train_config
from .data import parse_label_dict

__all__ = ["build_parser", "config_from_args", "main"]


def _bool(text: str) -> bool:
    return str(text).lower() in ("1", "true", "yes", "y")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train-mil", description="Train MIL models (CLAM main.py flags) on slide features.")
    p.add_argument("--config", help="train.yaml (sections data, split, model, optim, logging, run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    g = p.add_argument_group("CLAM main.py")
    g.add_argument("--data_root_dir", help="features dir: pt_files/ + h5_files/ (CLAM) or TRIDENT .h5 files")
    g.add_argument("--csv_path", help="dataset CSV: case_id, slide_id, label")
    g.add_argument("--label_dict", help='JSON, e.g. \'{"normal": 0, "tumor": 1}\' (or a JSON file)')
    g.add_argument("--results_dir")
    g.add_argument("--split_dir", help="folder with CLAM's splits_{k}.csv")
    g.add_argument("--split_mode", choices=["holdout", "kfold", "monte_carlo"])
    g.add_argument("--exp_code")
    g.add_argument("--k", type=int)
    g.add_argument("--k_start", type=int)
    g.add_argument("--k_end", type=int)
    g.add_argument("--max_epochs", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--reg", type=float)
    g.add_argument("--opt", choices=["adam", "adamw", "sgd"])
    g.add_argument("--drop_out", type=float, nargs="?", const=0.25)
    g.add_argument("--bag_loss", choices=["ce"])
    g.add_argument("--model_type")
    g.add_argument("--model_size", choices=["small", "big"])
    g.add_argument("--inst_loss", choices=["svm", "ce", "None"])
    g.add_argument("--bag_weight", type=float)
    g.add_argument("--B", type=int)
    g.add_argument("--weighted_sample", action="store_true", default=None)
    g.add_argument("--early_stopping", action="store_true", default=None)
    g.add_argument("--log_data", action="store_true", default=None)
    g.add_argument("--no_log_data", dest="log_data", action="store_false")
    g.add_argument("--subtyping", action="store_true", default=None)
    g.add_argument("--seed", type=int)
    g.add_argument("--label_frac", type=float)
    g.add_argument("--val_frac", type=float)
    g.add_argument("--test_frac", type=float)
    g.add_argument("--embed_dim", type=int)
    g.add_argument("--max_patches", type=int)
    g.add_argument("--devices", help="number of devices (DDP over several)")
    g.add_argument("--eval_only", action="store_true", default=None, help="evaluate the checkpoints of --models_dir")
    g.add_argument("--models_dir", help="--eval_only: folder holding s_{k}_checkpoint.pt")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verbose", "-v", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated config: YAML (or defaults), then the CLAM flags given, then ``--set``.

    Raises:
        ConfigError: bad YAML, key or value (one line each).
    """
    cfg = load_train_config(args.config) if args.config else TrainConfig()
    flags: dict = {}
    for flag, key in CLAM_FLAGS.items():
        v = getattr(args, flag, None)
        if v is None:
            continue
        if flag == "label_dict":
            v = parse_label_dict(v)
        elif flag == "inst_loss" and v == "None":
            v = None
        elif flag == "devices":
            v = int(v) if str(v).isdigit() else v
        flags[key] = v
    if args.k is not None and args.split_mode is None and args.k > 1 and cfg.split.mode == "holdout":
        flags["split.mode"] = "monte_carlo"
    if flags:
        cfg = apply_overrides(cfg, flags, source="command line")
    if args.overrides:
        cfg = apply_overrides(cfg, args.overrides)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
                        stream=sys.stderr)
    try:
        from .run import train_run  # torch/Lightning only after the arguments parse

        train_run(config_from_args(args))
    except WsiHeatmapsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
