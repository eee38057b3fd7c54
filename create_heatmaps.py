#!/usr/bin/env python
"""CLAM-compatible heatmaps: ``python create_heatmaps.py --config heatmaps/configs/config_template.yaml``.

The same command is installed as ``create-heatmaps``. See README.md for the options.
"""
from __future__ import annotations

import sys


def main() -> int:
    from heatmaps.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
