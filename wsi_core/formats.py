"""Every HDF5 file layout the project reads or writes, in one torch-free module.

Feature files (the bag a MIL model scores):

* CLAM ``{slide_id}.h5``: ``features`` float32 (N, D), ``coords`` int64 (N, 2) level-0 px
  top-left ``(x, y)``. The files this tool writes carry what made the features as attributes of
  ``features`` (encoder, weights source, target_img_size, patch_size, patch_level,
  custom_downsample, precision, fully_convolutional).
* TRIDENT ``features_{encoder}/{slide_id}.h5``: the same two datasets; ``coords`` carries
  ``patch_size`` (px at the target magnification), ``patch_size_level0`` (level-0 px),
  ``level0_magnification`` and ``target_magnification``.
* CLAM ``{slide_id}.pt`` (a torch tensor) needs torch and is read in ``models.pt_features``.

Score files (what a heatmap is drawn from):

* blockmap ``{slide_id}_blockmap.h5``: ``attention_scores`` float32 (N, 1) raw pre-softmax
  attention, ``coords`` int64 (N, 2); file attributes ``probs``, ``pred``, ``bag_size``,
  ``model_type``.
* fine pass ``{slide_id}_{overlap}_roi_{True|False}.h5``: ``attention_scores`` (M, 1)
  percentiles 0-100 (``score_kind = 'percentile'``) or raw (``'raw'``), ``coords`` (M, 2); ours
  add ``attention_raw`` float32 (M, 1) and ``class_scores`` float32 (M, C) per-patch class logits,
  and the colour scales of the score maps as file attributes ``attention_{key}`` and
  ``score_{class}_{key}`` (:func:`record_scale_attrs`).
* ``{output stem}_coords.h5`` beside a high-resolution heatmap: CLAM's blockmap layout with
  ``patch_size``, ``step_size``, ``patch_level``, ``encoder`` on the file and on ``coords``.

Every write is atomic (:func:`wsi_core.io.write_h5`); the user's files are only ever read.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from .errors import FeatureFileError
from .io import read_rows, write_h5

__all__ = [
    "FEATURES", "COORDS", "ATTENTION_SCORES", "ATTENTION_RAW", "CLASS_SCORES", "TRIDENT_ATTRS",
    "FeatureBag", "validate_bag", "read_features_h5", "read_coords_h5", "write_features_h5",
    "write_trident_features_h5", "ScoreFile", "RawScores", "write_scores", "read_scores", "has_raw_scores",
    "read_raw_scores", "write_coords_h5", "record_scale_attrs", "scores_are_percentiles", "score_file_kind",
    "BLOCKMAP_SUFFIX", "COORDS_SUFFIX", "fine_pass_name",
]

FEATURES = "features"
COORDS = "coords"
ATTENTION_SCORES = "attention_scores"
ATTENTION_RAW = "attention_raw"
CLASS_SCORES = "class_scores"
TRIDENT_ATTRS = ("patch_size", "patch_size_level0", "level0_magnification", "target_magnification")


# ----------------------------------------------------------------------------------- features


@dataclass
class FeatureBag:
    """A slide's bag: ``features`` (N, D) float32, ``coords`` (N, 2) int64 level-0 px top-left
    ``(x, y)``; ``source`` names where it came from (for messages); ``attrs`` the file's
    attributes (``coords``, ``features`` and file attributes merged)."""

    features: np.ndarray
    coords: np.ndarray
    source: str
    attrs: dict = field(default_factory=dict)


def validate_bag(features: np.ndarray, coords: np.ndarray, *, source: str) -> FeatureBag:
    """Check shapes, counts and finiteness; a leading batch axis of 1 is dropped.

    Raises:
        FeatureFileError: features not 2-D, coords not (N, 2), counts differ, empty, NaN or Inf.
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


def read_features_h5(path: str | os.PathLike[str], *, need_features: bool = True
                     ) -> tuple[np.ndarray | None, np.ndarray, dict]:
    """``(features (N, D) | None, coords (N, 2), attrs)`` of a CLAM or TRIDENT feature H5.

    ``attrs`` merges the attributes of ``coords``, ``features`` and the file (in that order).

    Raises:
        FeatureFileError: not a readable HDF5 file, or ``coords`` (or ``features`` when
            ``need_features``) missing; the message names the file and the datasets found.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if COORDS not in f:
                raise FeatureFileError(f"{path}: no 'coords' dataset (found {', '.join(f.keys())}); a CLAM/TRIDENT feature file holds 'features' and 'coords'")
            coords = read_rows(f[COORDS])
            attrs = dict(f[COORDS].attrs.items())
            feats = None
            if need_features:
                if FEATURES not in f:
                    raise FeatureFileError(f"{path}: no 'features' dataset (found {', '.join(f.keys())})")
                feats = read_rows(f[FEATURES])
                attrs.update(f[FEATURES].attrs.items())
            attrs.update(f.attrs.items())
    except OSError as exc:
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    return feats, coords, attrs


def read_coords_h5(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict]:
    """``(coords (N, 2), attrs)`` of a feature or patch H5 (errors as :func:`read_features_h5`)."""
    _, coords, attrs = read_features_h5(path, need_features=False)
    return coords, attrs


def write_features_h5(path: str | os.PathLike[str], features: np.ndarray, coords: np.ndarray, *,
                      attrs: Mapping[str, Any] | None = None) -> Path:
    """CLAM's ``{slide_id}.h5``: ``features`` (N, D) float32 with ``attrs``, ``coords`` (N, 2) int64."""
    return write_h5(path, {FEATURES: np.asarray(features, np.float32), COORDS: np.asarray(coords, np.int64)},
                    attrs={FEATURES: dict(attrs or {})})


def write_trident_features_h5(path: str | os.PathLike[str], features: np.ndarray, coords: np.ndarray, *,
                              patch_size: int, patch_size_level0: int, level0_magnification: float,
                              target_magnification: float, attrs: Mapping[str, Any] | None = None) -> Path:
    """TRIDENT's ``features_{encoder}/{slide_id}.h5``: ``features`` (N, D) float32 (``attrs`` on
    it), ``coords`` (N, 2) int64 level-0 px with TRIDENT's four patching attributes."""
    coords_attrs = {"patch_size": int(patch_size), "patch_size_level0": int(patch_size_level0),
                    "level0_magnification": float(level0_magnification),
                    "target_magnification": float(target_magnification)}
    return write_h5(path, {FEATURES: np.asarray(features, np.float32), COORDS: np.asarray(coords, np.int64)},
                    attrs={FEATURES: dict(attrs or {}), COORDS: coords_attrs})


# ------------------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class ScoreFile:
    """A score file read whole: ``scores`` (N,) float32, ``coords`` (N, 2) int64 level-0 px,
    ``attrs`` (attributes of ``coords`` and of the file, merged)."""

    scores: np.ndarray
    coords: np.ndarray
    attrs: dict


@dataclass(frozen=True)
class RawScores:
    """The raw numbers of a fine pass written by this tool: ``coords`` (M, 2) int64 level-0 px,
    ``attention`` (M,) float32 raw attention, ``class_logits`` (M, C) float32 per-patch logits."""

    coords: np.ndarray
    attention: np.ndarray
    class_logits: np.ndarray


def write_scores(path: str | os.PathLike[str], scores: np.ndarray, coords: np.ndarray, *,
                 attrs: Mapping[str, Any] | None = None, attention_raw: np.ndarray | None = None,
                 class_scores: np.ndarray | None = None) -> Path:
    """CLAM's score H5 (blockmap or fine pass): ``attention_scores`` float32 (N, 1), ``coords``
    int64 (N, 2), file attributes ``attrs``; ours optionally add ``attention_raw`` (N, 1) and
    ``class_scores`` (N, C) float32."""
    data = {ATTENTION_SCORES: np.asarray(scores, np.float32).reshape(-1, 1), COORDS: np.asarray(coords, np.int64)}
    if attention_raw is not None:
        data[ATTENTION_RAW] = np.asarray(attention_raw, np.float32).reshape(-1, 1)
    if class_scores is not None:
        data[CLASS_SCORES] = np.asarray(class_scores, np.float32)
    return write_h5(path, data, attrs={"/": dict(attrs)} if attrs else None)


def read_scores(path: str | os.PathLike[str]) -> ScoreFile:
    """A blockmap, fine-pass or ``_coords.h5`` file (CLAM's or ours).

    Raises:
        FeatureFileError: the file is missing, not HDF5, or lacks either dataset.
    """
    try:
        with h5py.File(path, "r") as f:
            attrs = {**dict(f[COORDS].attrs), **dict(f.attrs)}
            return ScoreFile(read_rows(f[ATTENTION_SCORES]).reshape(-1), read_rows(f[COORDS]).astype(np.int64), attrs)
    except (OSError, KeyError) as exc:
        raise FeatureFileError(f"{path}: not a score file with 'attention_scores' and 'coords' ({exc})") from None


def has_raw_scores(path: str | os.PathLike[str]) -> bool:
    """Whether a fine-pass H5 holds this tool's ``attention_raw`` and ``class_scores``."""
    with h5py.File(path, "r") as f:
        return ATTENTION_RAW in f and CLASS_SCORES in f


def read_raw_scores(path: str | os.PathLike[str]) -> RawScores:
    """The raw attention and per-patch class logits of a fine-pass H5 written by this tool.

    Raises:
        FeatureFileError: the file has no raw attention (e.g. CLAM's own H5 with calc_heatmap false).
    """
    with h5py.File(path, "r") as f:
        if ATTENTION_RAW not in f or CLASS_SCORES not in f:
            raise FeatureFileError(f"{path}: no 'attention_raw'/'class_scores' (not written by wsi-heatmaps); run with calc_heatmap: true for score maps")
        return RawScores(read_rows(f[COORDS]).astype(np.int64), read_rows(f[ATTENTION_RAW]).reshape(-1),
                         read_rows(f[CLASS_SCORES]))


def write_coords_h5(path: str | os.PathLike[str], coords: np.ndarray, scores: np.ndarray, *, patch_size: int,
                    step: int, patch_level: int, encoder: str, **attrs: Any) -> Path:
    """The patches behind a heatmap (``{output stem}_coords.h5``): ``coords`` (N, 2) int64 level-0
    px top-left ``(x, y)`` and ``attention_scores`` (N, 1) float32, CLAM's blockmap layout.

    Attributes: ``patch_size`` (px at ``patch_level``), ``step_size`` (px), ``patch_level`` and
    ``encoder`` on the file and on ``coords``; ``**attrs`` (str/number values) on the file.

    Raises:
        FeatureFileError: coords are not (N, 2) or scores do not have N finite values.
    """
    c = np.asarray(coords)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if c.ndim != 2 or c.shape[1] != 2 or len(s) != len(c) or not np.all(np.isfinite(s)):
        raise FeatureFileError(
            f"{path}: coords {c.shape} and scores {np.shape(scores)} do not match; expected (N, 2) "
            "level-0 coords and N finite scores"
        )
    meta = {"patch_size": int(patch_size), "step_size": int(step), "patch_level": int(patch_level),
            "encoder": str(encoder)}
    return write_h5(path, {COORDS: c.astype(np.int64), ATTENTION_SCORES: s.reshape(-1, 1)},
                    attrs={COORDS: meta, "/": {**meta, **attrs}})


def record_scale_attrs(path: str | os.PathLike[str], scales: Mapping[str, Mapping[str, Any]]) -> Path:
    """Rewrite a score H5 (atomically) with colour-scale attributes: for each ``prefix -> attrs``
    of ``scales`` (e.g. ``'attention'``, ``'score_LUAD'``) the file gets ``{prefix}_{key}``."""
    with h5py.File(path, "r") as f:
        data = {k: read_rows(f[k]) for k in f.keys()}
        attrs = dict(f.attrs)
    for prefix, values in scales.items():
        attrs.update({f"{prefix}_{k}": v for k, v in values.items()})
    return write_h5(path, data, attrs={"/": attrs})


BLOCKMAP_SUFFIX = "_blockmap.h5"      # {slide_id}_blockmap.h5 (CLAM)
COORDS_SUFFIX = "_coords.h5"          # {output stem}_coords.h5 beside a high-resolution heatmap
_FINE_PASS = re.compile(r"_roi_(True|False)\.h5$")


def fine_pass_name(slide_id: str, overlap: float, use_roi: bool) -> str:
    """CLAM's fine-pass H5 name ``{slide_id}_{overlap}_roi_{True|False}.h5``."""
    return f"{slide_id}_{overlap}_roi_{use_roi}.h5"


def score_file_kind(path: str | os.PathLike[str]) -> str | None:
    """What a score file is by CLAM's names for it: ``'blockmap'`` (``{slide_id}_blockmap.h5``),
    ``'fine_pass'`` (``{slide_id}_{overlap}_roi_{True|False}.h5``), ``'coords'``
    (``{output stem}_coords.h5``) or None. The names are here, with the layouts, because the
    viewer (which never imports ``heatmaps``) tells the files apart too."""
    name = Path(path).name
    if name.endswith(BLOCKMAP_SUFFIX):
        return "blockmap"
    if _FINE_PASS.search(name):
        return "fine_pass"
    if name.endswith(COORDS_SUFFIX):
        return "coords"
    return None


def scores_are_percentiles(score_file: ScoreFile, *, file_kind: str | None) -> bool:
    """Whether a score file holds 0-100 percentiles (else raw attention, to be ranked).

    ``file_kind``: ``'blockmap'``, ``'fine_pass'``, ``'coords'`` or None (unknown), as the output
    layout names the file (:func:`score_file_kind`). Ours say so in ``score_kind``;
    CLAM's blockmaps hold raw attention, and CLAM's fine-pass H5s hold percentiles when their
    values lie in [0, 100] (``use_ref_scores``)."""
    kind = score_file.attrs.get("score_kind")
    if kind is not None:
        return str(kind) == "percentile"
    s = score_file.scores
    return file_kind == "fine_pass" and len(s) > 0 and bool(s.min() >= 0) and bool(s.max() <= 100)
