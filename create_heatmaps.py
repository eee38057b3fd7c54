#!/usr/bin/env python
"""CLAM-compatible heatmaps: ``python create_heatmaps.py --config heatmaps/configs/config_template.yaml``.

The same command is installed as ``create-heatmaps``. See README.md for the options.

A first word naming a subcommand hands the rest of the command line to that tool
(``create-heatmaps view …`` is ``view-heatmaps …``); every other command line is the heatmap run.
"""
from __future__ import annotations

import importlib
import sys

#: subcommand -> "module:function" taking argv (list[str]) and returning the exit status
SUBCOMMANDS: dict[str, str] = {
    "extract": "heatmaps.extract_cli:main",
    "train": "models.train.cli:main",
    "view": "viewer.cli:main",
    "status": "heatmaps.cohort_status:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        module, func = SUBCOMMANDS[argv[0]].split(":")
        return getattr(importlib.import_module(module), func)(argv[1:])
    from heatmaps.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
