#!/usr/bin/env python
"""Marugoto-style maps of several slides on one colour scale, no YAML:
``python create_heatmaps_marugoto.py -m s_0.pt -o out/ -t 1 a.svs b.svs``.

The same command is installed as ``create-heatmaps-marugoto`` (and ``create-heatmaps -m ...``
accepts the same flags); see README.md and ``--help``.
"""
from __future__ import annotations

import sys


def main() -> int:
    from heatmaps.marugoto_cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
