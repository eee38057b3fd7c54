"""viewer: the synchronised web viewer - a slide beside its heatmap (Flask + OpenSeadragon).

Imports ``wsi_core`` and ``vis_utils`` only (never torch, ``models`` or ``heatmaps``). See
:mod:`viewer.sources` (tiles, grid index), :mod:`viewer.registry` (what may be served),
:mod:`viewer.app` (routes) and :mod:`viewer.cli` (``view-heatmaps``).
"""
from __future__ import annotations

from .app import create_app
from .registry import Registry

__all__ = ["create_app", "Registry"]
