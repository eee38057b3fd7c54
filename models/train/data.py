"""The training cohort: CLAM's dataset CSV, the features directory and the bags.

* Dataset CSV (CLAM ``main.py`` / ``create_splits_seq.py``): columns ``case_id`` (patient),
  ``slide_id`` and ``label`` (a class name of ``label_dict``, or its integer index).
* Features directory (``--data_root_dir``), first found wins per slide:
  CLAM's ``pt_files/{slide_id}.pt`` (features; coordinates from ``h5_files/{slide_id}.h5`` when
  present), CLAM's ``h5_files/{slide_id}.h5``, or a flat folder of ``{slide_id}.h5`` (TRIDENT's
  ``features_{encoder}/``, or CLAM's h5 files) / ``{slide_id}.pt``.

:func:`build_cohort` reads every bag once before training: a slide without features, with an
empty bag or with NaN/Inf is listed and skipped with a warning; features of different widths
stop the run (ConfigError naming the widths and a slide of each), so training never fails
mid-epoch on bad input.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from wsi_core.errors import ConfigError, FeatureFileError
from wsi_core.formats import read_coords_h5, read_features_h5

from ..pt_features import read_pt_features

__all__ = ["FeatureSource", "Cohort", "read_dataset_csv", "parse_label_dict", "find_features",
           "load_features", "load_coords", "build_cohort", "BagDataset"]

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("case_id", "slide_id", "label")


@dataclass(frozen=True)
class FeatureSource:
    """Where a slide's bag lives: ``features`` (a ``.pt`` or ``.h5`` file) and ``coords`` (an
    ``.h5`` with ``coords`` (N, 2) int64 level-0 px, or None when only a ``.pt`` exists)."""

    features: Path
    coords: Path | None


def parse_label_dict(value: str | Mapping[str, int] | None, *, source: str = "--label_dict") -> dict[str, int] | None:
    """``label_dict`` from a mapping, a JSON string (``'{"LUAD": 0, "LSCC": 1}'``) or a JSON file.

    Raises:
        ConfigError: not JSON, not a mapping of names to integers 0..C-1 (each once).
    """
    if value is None or isinstance(value, Mapping):
        d = value
    else:
        text = Path(value).read_text() if Path(str(value)).is_file() else str(value)
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not JSON ({exc.msg}); give e.g. '{{\"normal\": 0, \"tumor\": 1}}'") from None
    if d is None:
        return None
    if not isinstance(d, Mapping) or not d or not all(isinstance(v, int) and not isinstance(v, bool) for v in d.values()):
        raise ConfigError(f"{source}: must map class names to integers, e.g. {{\"normal\": 0, \"tumor\": 1}}; got {d!r}")
    if sorted(set(d.values())) != list(range(len(set(d.values())))):
        raise ConfigError(f"{source}: class indices must be 0..C-1, got {sorted(set(d.values()))}")
    return {str(k): int(v) for k, v in d.items()}


def read_dataset_csv(path: str | os.PathLike[str], label_dict: Mapping[str, int] | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read CLAM's dataset CSV; returns ``(slides, label_dict)``.

    ``slides`` has ``case_id``, ``slide_id`` (str, one row each), ``label`` (the name) and ``y``
    (int64 class index). Without ``label_dict`` the sorted distinct labels are numbered 0..C-1.

    Raises:
        ConfigError: unreadable file, a missing column, a repeated slide_id, a label not in
            ``label_dict`` (names the slide and the valid labels).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"case_id": str, "slide_id": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(f"{path}: cannot read the dataset CSV ({exc}); set --csv_path / data.csv_path") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; a CLAM dataset CSV has case_id, slide_id, label "
                          f"(found {', '.join(map(str, df.columns))})")
    df = df[list(REQUIRED_COLUMNS)].copy()
    df["slide_id"] = df["slide_id"].str.strip()
    dup = df["slide_id"][df["slide_id"].duplicated()]
    if len(dup):
        raise ConfigError(f"{path}: slide_id {dup.iloc[0]!r} appears {int((df['slide_id'] == dup.iloc[0]).sum())} times; each slide once")
    labels = df["label"].astype(str).str.strip()
    if label_dict is None:
        label_dict = {name: i for i, name in enumerate(sorted(labels.unique()))}
    by_index = {str(v): v for v in label_dict.values()}
    y = labels.map(lambda s: label_dict.get(s, by_index.get(s)))
    bad = y.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ConfigError(f"{path}: slide {df['slide_id'].iloc[i]!r} has label {labels.iloc[i]!r}, not in label_dict "
                          f"({', '.join(label_dict)}); fix the CSV or --label_dict ({int(bad.sum())} such rows)")
    df["label"] = labels
    df["y"] = y.astype(np.int64)
    return df.reset_index(drop=True), dict(label_dict)


def _strip_ext(slide_id: str) -> str:
    for ext in (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".svslide"):
        if slide_id.lower().endswith(ext):
            return slide_id[: -len(ext)]
    return slide_id


def find_features(root: str | os.PathLike[str], slide_ids: list[str]) -> dict[str, FeatureSource]:
    """Feature files of ``slide_ids`` under ``root`` (layouts in the module docstring); slides
    without any are left out. A slide id may carry the slide's extension (``x.svs``).

    Raises:
        ConfigError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"features directory {root} does not exist; set --data_root_dir / data.data_root_dir")
    found: dict[str, FeatureSource] = {}
    for sid in slide_ids:
        stem = _strip_ext(sid)
        h5 = next((p for p in (root / "h5_files" / f"{stem}.h5", root / f"{stem}.h5") if p.is_file()), None)
        pt = next((p for p in (root / "pt_files" / f"{stem}.pt", root / f"{stem}.pt") if p.is_file()), None)
        if pt is not None:
            found[sid] = FeatureSource(pt, h5)
        elif h5 is not None:
            found[sid] = FeatureSource(h5, h5)
    return found


def load_features(src: FeatureSource) -> np.ndarray:
    """The bag's features (N, D) float32 (:class:`FeatureFileError` for an unreadable file)."""
    if src.features.suffix == ".pt":
        return read_pt_features(src.features)
    feats, _, _ = read_features_h5(src.features)
    return np.asarray(feats, np.float32)


def load_coords(src: FeatureSource) -> tuple[np.ndarray | None, dict]:
    """``(coords (N, 2) int64 level-0 px | None, attrs)``: None when the slide has no ``.h5``."""
    if src.coords is None:
        return None, {}
    coords, attrs = read_coords_h5(src.coords)
    return np.asarray(coords, np.int64), attrs


@dataclass
class Cohort:
    """The slides that train: ``slides`` (case_id, slide_id, label, y; only slides with usable
    features), their ``sources``, the feature width ``dim`` (D), ``label_dict`` and the
    ``skipped`` slides with the reason."""

    slides: pd.DataFrame
    sources: dict[str, FeatureSource]
    dim: int
    label_dict: dict[str, int]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(set(self.label_dict.values()))

    @property
    def class_names(self) -> list[str]:
        names: dict[int, str] = {}
        for name, i in self.label_dict.items():
            names.setdefault(i, name)
        return [names[i] for i in range(self.n_classes)]


def build_cohort(csv_path: str | os.PathLike[str], data_root_dir: str | os.PathLike[str],
                 label_dict: Mapping[str, int] | None) -> Cohort:
    """Read the dataset CSV, find every slide's features and check each bag once.

    Skipped with a warning (listed in ``Cohort.skipped``): no feature file, unreadable file,
    empty bag, NaN/Inf in the features.

    Raises:
        ConfigError: bad CSV (see :func:`read_dataset_csv`); no slide with features; features of
            different widths (names each width with a slide and its count).
    """
    df, label_dict = read_dataset_csv(csv_path, label_dict)
    sources = find_features(data_root_dir, df["slide_id"].tolist())
    skipped: dict[str, str] = {}
    widths: dict[int, list[str]] = {}
    for sid in df["slide_id"]:
        src = sources.get(sid)
        if src is None:
            skipped[sid] = f"no features in {data_root_dir} (pt_files/, h5_files/ or {_strip_ext(sid)}.h5)"
            continue
        try:
            feats = load_features(src)
        except FeatureFileError as exc:
            skipped[sid] = str(exc)
            continue
        if feats.ndim != 2 or len(feats) == 0:
            skipped[sid] = f"{src.features}: empty bag (shape {feats.shape})"
            continue
        bad = ~np.isfinite(feats).all(axis=1)
        if bad.any():
            skipped[sid] = f"{src.features}: {int(bad.sum())} of {len(feats)} feature rows hold NaN or Inf; re-extract the features"
            continue
        widths.setdefault(int(feats.shape[1]), []).append(sid)
    for sid, why in skipped.items():
        log.warning("skipping slide %s: %s", sid, why)
    if len(widths) > 1:
        desc = "; ".join(f"{d}-d: {len(s)} slides (e.g. {s[0]})" for d, s in sorted(widths.items()))
        raise ConfigError(f"{data_root_dir}: features of different widths in one cohort ({desc}); "
                          "extract every slide with the same encoder")
    if not widths:
        raise ConfigError(f"none of the {len(df)} slides of {csv_path} has usable features in {data_root_dir}")
    keep = df[~df["slide_id"].isin(list(skipped))].reset_index(drop=True)
    return Cohort(keep, {s: sources[s] for s in keep["slide_id"]}, next(iter(widths)), label_dict, skipped)


class BagDataset(Dataset):
    """Bags of a subset of the cohort for a torch DataLoader (batch size 1).

    Item ``i``: ``(features (n, D) float32, label () int64, i () int64)``; with ``max_patches``
    (training) a bag larger than it is a random subset of ``max_patches`` instances (drawn from
    torch's global generator, seeded by Lightning per worker). Bags are read from disk on each
    access unless ``preload``.
    """

    def __init__(self, cohort: Cohort, slide_ids: list[str], *, max_patches: int | None = None,
                 preload: bool = False) -> None:
        self.cohort = cohort
        self.slide_ids = list(slide_ids)
        rows = cohort.slides.set_index("slide_id").loc[self.slide_ids]
        self.labels = rows["y"].to_numpy(np.int64)
        self.max_patches = max_patches
        self._cache = {s: load_features(cohort.sources[s]) for s in self.slide_ids} if preload else None

    def __len__(self) -> int:
        return len(self.slide_ids)

    def features(self, i: int) -> np.ndarray:
        sid = self.slide_ids[i]
        return self._cache[sid] if self._cache is not None else load_features(self.cohort.sources[sid])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.from_numpy(np.ascontiguousarray(self.features(i)))
        if self.max_patches and len(h) > self.max_patches:
            h = h[torch.randperm(len(h))[: self.max_patches]]
        return h, torch.tensor(self.labels[i]), torch.tensor(i)
