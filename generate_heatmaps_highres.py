#!/usr/bin/env python
"""High-resolution heatmap of one slide, no YAML:
``python generate_heatmaps_highres.py --checkpoint s_0.pt --slide slide.svs --output slide_heatmap.tiff``.

The same command is installed as ``generate-heatmaps-highres``; its flags are those of
``create-heatmaps --checkpoint/--scores --slide --output`` (README.md, ``--help``).
"""
from __future__ import annotations

import sys


def main() -> int:
    from heatmaps.cli import main_highres

    return main_highres(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
