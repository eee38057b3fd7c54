"""The light install (``wsi-heatmaps-render``, ``packaging/render``): what runs without the model stack.

The full distribution ``wsi-heatmaps`` (the repository's ``setup.cfg``) installs everything; the
light one installs the same modules without torch, torchvision, timm and safetensors. On it,
re-rendering a score file (``create-heatmaps --scores``), the heatmap images and pyramidal TIFFs,
the viewer and the QuPath / DSA exports work, because their modules never import torch
(:data:`LIGHT_MODULES`, checked in a subprocess by ``tests/heatmaps/test_light.py``). A command
that runs a model calls :func:`require_full_install` first and, on the light install, stops with
one line naming the full package.
"""
from __future__ import annotations

import importlib

from wsi_core.errors import MissingDependencyError

__all__ = ["FULL_ONLY", "LIGHT_MODULES", "FULL_PACKAGE", "require_full_install"]

#: the modules only the full install has (the light distribution drops exactly these requirements)
FULL_ONLY = ("torch", "torchvision", "timm", "safetensors")
#: the torch-free paths: re-render, images and TIFF, exports, every command line's parsing
LIGHT_MODULES = ("create_heatmaps", "generate_heatmaps", "generate_heatmaps_highres", "create_heatmaps_marugoto",
                 "heatmaps.cli", "heatmaps.highres", "heatmaps.writers", "heatmaps.writers.dsa",
                 "heatmaps.writers.qupath", "vis_utils.tiled", "vis_utils.tiff", "vis_utils.heatmap",
                 "wsi_core.qupath", "wsi_core.dsa", "wsi_core.formats", "wsi_core.slide")
FULL_PACKAGE = "pip install wsi-heatmaps"


def require_full_install(task: str) -> None:
    """Import the model stack ``task`` (e.g. ``"create-heatmaps --demo"``) needs, or stop.

    Raises:
        MissingDependencyError: one of :data:`FULL_ONLY` is not installed (the light install):
        "``task`` runs a model, which needs torch ...; install the full package: pip install wsi-heatmaps".
    """
    for name in FULL_ONLY:
        try:
            importlib.import_module(name)
        except ImportError:
            raise MissingDependencyError(
                f"{task} runs a model, which needs {name} (the light install wsi-heatmaps-render has no "
                f"torch, torchvision, timm or safetensors); install the full package: {FULL_PACKAGE}") from None
