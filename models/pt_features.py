"""CLAM's ``pt_files/{slide_id}.pt`` feature files: a float tensor (N, D), read and written with
torch (every other feature and score layout is torch-free, in :mod:`wsi_core.formats`)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from wsi_core.errors import FeatureFileError
from wsi_core.io import atomic_path

__all__ = ["read_pt_features", "write_pt_features"]


def read_pt_features(path: str | os.PathLike[str]) -> np.ndarray:
    """Features (N, D) float32 of a CLAM ``.pt`` file (a tensor, or a dict with ``features``/``feats``).

    Raises:
        FeatureFileError: the file is not a readable torch file or holds no tensor.
    """
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise FeatureFileError(f"{path}: not a readable torch feature file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict):
        obj = obj.get("features", obj.get("feats"))
    if not isinstance(obj, torch.Tensor):
        raise FeatureFileError(f"{path}: expected a (N, D) tensor of features, got {type(obj).__name__}")
    return obj.float().numpy()


def write_pt_features(path: str | os.PathLike[str], features: np.ndarray) -> Path:
    """CLAM's ``{slide_id}.pt``: the (N, D) float32 features as a torch tensor (atomic write)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(torch.from_numpy(np.ascontiguousarray(features)), tmp)
    return path
