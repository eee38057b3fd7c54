"""The version of wsi-heatmaps that is running (``create-heatmaps --version``).

The installed distribution's metadata (``importlib.metadata``) is the source; a source checkout run
without installing (``python create_heatmaps.py`` with the repository on ``PYTHONPATH``) falls back
to ``[metadata] version`` of the ``setup.cfg`` beside the packages.
"""
from __future__ import annotations

import configparser
from importlib import metadata
from pathlib import Path

__all__ = ["DISTRIBUTION", "package_version"]

DISTRIBUTION = "wsi-heatmaps"
SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def package_version() -> str:
    """``'0.1.0'``: the installed ``wsi-heatmaps`` version, else ``setup.cfg``'s, else ``'unknown'``."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    cfg = configparser.ConfigParser()
    try:
        cfg.read(SETUP_CFG, encoding="utf-8")
    except (OSError, configparser.Error):
        return "unknown"
    return cfg.get("metadata", "version", fallback="unknown").strip() or "unknown"
