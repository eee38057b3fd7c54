"""Pre-extracted patch features: CLAM ``.h5``/``.pt`` and TRIDENT ``.h5`` files.

Using the training bag's own features makes the heatmap bag the bag the model was trained on
(CLAM#154). Layouts:

* CLAM ``{slide_id}.h5``: ``features`` float32 (N, D), ``coords`` int64 (N, 2) level-0 top-left.
* CLAM ``{slide_id}.pt``: a float tensor (N, D); coords come from the ``.h5`` beside it.
* TRIDENT ``{slide_id}.h5``: ``features`` (N, D), ``coords`` (N, 2) with attributes
  ``patch_size``, ``patch_size_level0``, ``level0_magnification``, ``target_magnification``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from wsi_core.errors import FeatureFileError
from wsi_core.io import atomic_path, write_h5


@dataclass
class FeatureBag:
    """A slide's bag: features (N, D) float32 and coords (N, 2) int64 level-0 (x, y)."""

    features: np.ndarray
    coords: np.ndarray
    source: str
    attrs: dict = field(default_factory=dict)


def _read_h5(path: Path, *, need_features: bool) -> tuple[np.ndarray | None, np.ndarray, dict]:
    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f:
                raise FeatureFileError(f"{path}: no 'coords' dataset (found {', '.join(f.keys())}); a CLAM/TRIDENT feature file holds 'features' and 'coords'")
            coords = f["coords"][:]
            attrs = {k: v for k, v in f["coords"].attrs.items()}
            feats = None
            if need_features:
                if "features" not in f:
                    raise FeatureFileError(f"{path}: no 'features' dataset (found {', '.join(f.keys())})")
                feats = f["features"][:]
                attrs.update({k: v for k, v in f["features"].attrs.items()})
            attrs.update({k: v for k, v in f.attrs.items()})
    except OSError as exc:
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    return feats, coords, attrs


def _read_pt(path: Path) -> np.ndarray:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise FeatureFileError(f"{path}: not a readable torch feature file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict):
        obj = obj.get("features", obj.get("feats"))
    if not isinstance(obj, torch.Tensor):
        raise FeatureFileError(f"{path}: expected a (N, D) tensor of features, got {type(obj).__name__}")
    return obj.float().numpy()


def validate_bag(features: np.ndarray, coords: np.ndarray, *, source: str) -> FeatureBag:
    """Check shapes, counts and finiteness.

    Raises:
        FeatureFileError: features not 2-D, coords not (N, 2), counts differ, NaN or Inf.
    """
    features = np.asarray(features)
    coords = np.asarray(coords)
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 2:
        raise FeatureFileError(f"{source}: features must be (N, D), got shape {features.shape}")
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise FeatureFileError(f"{source}: coords must be (N, 2) level-0 x, y, got shape {coords.shape}")
    if len(features) != len(coords):
        raise FeatureFileError(f"{source}: {len(features)} feature rows but {len(coords)} coords; features and coords must come from the same extraction")
    if len(features) == 0:
        raise FeatureFileError(f"{source}: the bag is empty (0 patches)")
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise FeatureFileError(f"{source}: {len(rows)} of {len(features)} feature rows hold NaN or Inf (first row {rows[0]}); re-extract the features")
    return FeatureBag(features.astype(np.float32, copy=False), coords.astype(np.int64, copy=False), source)


def load_feature_bag(features_path: Path, coords_path: Path | None = None) -> FeatureBag:
    """Read a bag from a CLAM/TRIDENT ``.h5`` or a CLAM ``.pt`` (+ coords from ``coords_path``
    or the ``.h5`` of the same stem beside it).

    Raises:
        FeatureFileError: missing file or dataset, count mismatch, NaN/Inf.
    """
    features_path = Path(features_path)
    if not features_path.is_file():
        raise FeatureFileError(f"features file not found: {features_path}; fix features_path in the process list or data_arguments.features_dir")
    attrs: dict = {}
    if features_path.suffix == ".pt":
        feats = _read_pt(features_path)
        cpath = Path(coords_path) if coords_path else features_path.with_suffix(".h5")
        if not cpath.is_file():
            raise FeatureFileError(f"{features_path}: no coords file {cpath}; give coords_path in the process list")
        _, coords, attrs = _read_h5(cpath, need_features=False)
    else:
        feats, coords, attrs = _read_h5(features_path, need_features=True)
        if coords_path:
            _, coords, _ = _read_h5(Path(coords_path), need_features=False)
    bag = validate_bag(feats, coords, source=str(features_path))
    bag.attrs = attrs
    return bag


def find_features(slide_id: str, features_dir: str | None, features_path: Path | None,
                  coords_path: Path | None) -> FeatureBag | None:
    """The pre-extracted bag for a slide, if the process list or ``features_dir`` provides one:
    ``features_path`` (+ ``coords_path``), else ``{features_dir}/{slide_id}.pt`` with
    ``{slide_id}.h5`` coords, else ``{features_dir}/{slide_id}.h5`` (MIL-Lab's guide layout; also
    ``pt_files/`` and ``h5_files/`` sub-folders as CLAM writes them)."""
    if features_path is not None:
        return load_feature_bag(features_path, coords_path)
    if not features_dir:
        return None
    d = Path(features_dir)
    for pt, h5 in ((d / f"{slide_id}.pt", d / f"{slide_id}.h5"),
                   (d / "pt_files" / f"{slide_id}.pt", d / "h5_files" / f"{slide_id}.h5")):
        if pt.is_file() and h5.is_file():
            return load_feature_bag(pt, h5)
    for h5 in (d / f"{slide_id}.h5", d / "h5_files" / f"{slide_id}.h5"):
        if h5.is_file():
            return load_feature_bag(h5)
    return None


def save_feature_bag(bag: FeatureBag, h5_path: Path, pt_path: Path, *, attrs: dict) -> None:
    """Write CLAM's ``{slide_id}.h5`` (features, coords; ``attrs`` on ``features``) and ``{slide_id}.pt``."""
    write_h5(h5_path, {"features": bag.features, "coords": bag.coords}, attrs={"features": attrs})
    with atomic_path(pt_path) as tmp:
        torch.save(torch.from_numpy(np.ascontiguousarray(bag.features)), tmp)
