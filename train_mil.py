#!/usr/bin/env python
"""Train MIL models on slide features: ``python train_mil.py --config train.yaml`` or CLAM's
``main.py`` flags (``--data_root_dir``, ``--csv_path``, ``--k``, ...). Installed as ``train-mil``.
See README.md, "Training"."""
from __future__ import annotations

import sys

from models.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
