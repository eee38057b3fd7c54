"""Finding and loading a slide's pre-extracted features: CLAM ``.h5``/``.pt`` and TRIDENT ``.h5``.

Using the training bag's own features makes the heatmap bag the bag the model was trained on
(CLAM#154). The layouts are in :mod:`wsi_core.formats`; only a ``.pt`` file needs torch, and it
is imported only then (``models.pt_features``), so reading ``.h5`` bags stays torch-free.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_core.errors import FeatureFileError
from wsi_core.formats import FeatureBag, read_coords_h5, read_features_h5, validate_bag, write_features_h5

__all__ = ["FeatureBag", "validate_bag", "load_feature_bag", "find_features", "save_feature_bag"]


def load_feature_bag(features_path: Path, coords_path: Path | None = None) -> FeatureBag:
    """Read a bag from a CLAM/TRIDENT ``.h5`` or a CLAM ``.pt`` (+ coords from ``coords_path``
    or the ``.h5`` of the same stem beside it).

    Raises:
        FeatureFileError: missing file or dataset, count mismatch, NaN/Inf.
    """
    features_path = Path(features_path)
    if not features_path.is_file():
        raise FeatureFileError(f"features file not found: {features_path}; fix features_path in the process list or data_arguments.features_dir")
    if features_path.suffix == ".pt":
        from models.pt_features import read_pt_features

        feats = read_pt_features(features_path)
        cpath = Path(coords_path) if coords_path else features_path.with_suffix(".h5")
        if not cpath.is_file():
            raise FeatureFileError(f"{features_path}: no coords file {cpath}; give coords_path in the process list")
        coords, attrs = read_coords_h5(cpath)
    else:
        feats, coords, attrs = read_features_h5(features_path)
        if coords_path:
            coords, _ = read_coords_h5(Path(coords_path))
    bag = validate_bag(feats, coords, source=str(features_path))
    bag.attrs = attrs
    return bag


def find_features(slide_id: str, features_dir: str | None, features_path: Path | None,
                  coords_path: Path | None, *, encoder: str | None = None) -> FeatureBag | None:
    """The pre-extracted bag for a slide, if the process list or ``features_dir`` provides one:
    ``features_path`` (+ ``coords_path``), else ``{features_dir}/{slide_id}.pt`` with
    ``{slide_id}.h5`` coords, else ``{features_dir}/{slide_id}.h5`` (MIL-Lab's guide layout; also
    ``pt_files/`` and ``h5_files/`` sub-folders as CLAM writes them), else TRIDENT's
    ``{features_dir}/features_{encoder}/{slide_id}.h5`` (``encoder``: the config's encoder name;
    any single ``features_*`` folder holding the slide when it is None or absent).

    Raises:
        FeatureFileError: several TRIDENT folders hold the slide and none is the encoder's.
    """
    if features_path is not None:
        return load_feature_bag(features_path, coords_path)
    if not features_dir:
        return None
    d = Path(features_dir)
    for pt, h5 in ((d / f"{slide_id}.pt", d / f"{slide_id}.h5"),
                   (d / "pt_files" / f"{slide_id}.pt", d / "h5_files" / f"{slide_id}.h5")):
        if pt.is_file() and h5.is_file():
            return load_feature_bag(pt, h5)
    for h5 in (d / f"{slide_id}.h5", d / "h5_files" / f"{slide_id}.h5", d / f"features_{encoder}" / f"{slide_id}.h5"):
        if h5.is_file():
            return load_feature_bag(h5)
    trident = sorted(d.glob(f"features_*/{slide_id}.h5"))
    if len(trident) > 1:
        raise FeatureFileError(f"{d}: {len(trident)} TRIDENT folders hold {slide_id}.h5 "
                               f"({', '.join(p.parent.name for p in trident)}); set encoder_arguments.model_name to "
                               "the encoder whose features to use")
    return load_feature_bag(trident[0]) if trident else None


def save_feature_bag(bag: FeatureBag, h5_path: Path, pt_path: Path, *, attrs: dict) -> None:
    """Write CLAM's ``{slide_id}.h5`` (features, coords; ``attrs`` on ``features``) and ``{slide_id}.pt``."""
    from models.pt_features import write_pt_features

    write_features_h5(h5_path, bag.features, bag.coords, attrs=attrs)
    write_pt_features(pt_path, np.ascontiguousarray(bag.features))
