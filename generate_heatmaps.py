#!/usr/bin/env python
"""Standard heatmaps of a cohort from pre-extracted features, no YAML:
``python generate_heatmaps.py --checkpoint s_0.pt --h5_dir features/ --slide_dir slides/ --output_dir out/``.

The same command is installed as ``generate-heatmaps``; see README.md (and ``--help``) for the flags.
"""
from __future__ import annotations

import sys


def main() -> int:
    from heatmaps.cohort_cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
