"""``python -m heatmaps …`` is ``create-heatmaps …``: the same entry point (``create_heatmaps.main``),
its subcommand table included, and the same exit status."""
from __future__ import annotations

import sys

from create_heatmaps import main

if __name__ == "__main__":
    sys.exit(main())
