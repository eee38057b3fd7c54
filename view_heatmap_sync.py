#!/usr/bin/env python
"""``python view_heatmap_sync.py --slide slide.svs --heatmap heatmap.tiff``: the slide beside its
heatmap in a web page, pan and zoom locked (the same as ``view-heatmaps``; see viewer/cli.py)."""
from __future__ import annotations

import sys

from viewer.cli import main

if __name__ == "__main__":
    sys.exit(main())
