#!/usr/bin/env python
"""Extract patch features of a cohort of slides (CLAM and/or TRIDENT layout):
``python extract_features.py --data_dir SLIDES/ --feat_dir FEATURES/ --layout both``. Installed as
``extract-features`` (also ``create-heatmaps extract``). See README.md, "Training"."""
from __future__ import annotations

import sys

from heatmaps.extract_cli import main

if __name__ == "__main__":
    sys.exit(main())
