"""Patient-level stratified splits, and CLAM's ``splits_{k}.csv`` files.

Every split is made over patients (``case_id``) and then expanded to their slides, so no patient
is in two subsets. A patient's class for stratification is the highest class index among its
slides (CLAM's ``patient_voting='max'``). Three ways to make folds:

* ``holdout``: one fold, train/val/test = 1 - val_frac - test_frac / val_frac / test_frac
  (70/15/15 by default), stratified per class;
* ``kfold``: stratified k-fold over patients (scikit-learn ``StratifiedKFold``) for the test
  subsets; val is a stratified ``val_frac`` of the remaining patients;
* ``monte_carlo``: CLAM's ``create_splits_seq.py``: k independent draws; per class
  ``round(n_c * val_frac)`` patients to val, ``round(n_c * test_frac)`` to test, the rest to train
  (of which ``label_frac`` is kept).

CLAM's file (``splits_{k}.csv``): an unnamed index column and the columns ``train``, ``val``,
``test`` holding slide ids, shorter columns padded with empty cells.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from wsi_core.errors import ConfigError
from wsi_core.io import atomic_path

__all__ = ["Split", "SUBSETS", "patient_labels", "holdout_split", "kfold_splits", "monte_carlo_splits",
           "make_splits", "write_split_csv", "read_split_csv", "check_split", "split_csv_path"]

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One fold: slide ids of each subset."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def subset(self, name: str) -> tuple[str, ...]:
        return getattr(self, name)


def split_csv_path(split_dir: str | os.PathLike[str], k: int) -> Path:
    """CLAM's name of fold ``k``'s split file: ``{split_dir}/splits_{k}.csv``."""
    return Path(split_dir) / f"splits_{k}.csv"


def patient_labels(slides: pd.DataFrame) -> pd.Series:
    """Class index per ``case_id`` (the max over its slides, CLAM's patient voting), sorted by case."""
    return slides.groupby("case_id")["y"].max().sort_index()


def _check_enough(pl: pd.Series, need: int, what: str, names: list[str] | None) -> None:
    counts = pl.value_counts()
    for c in sorted(pl.unique()):
        if counts[c] < need:
            name = names[c] if names and c < len(names) else str(c)
            raise ConfigError(f"class '{name}' has {counts[c]} patient(s); a stratified {what} needs at least {need} "
                              "per class; add patients, lower k or the fractions, or give --split_dir")
    if len(counts) < 2 and what != "evaluation":
        raise ConfigError(f"the cohort has a single class ({names[pl.iloc[0]] if names else pl.iloc[0]}); training needs two or more")


def _expand(slides: pd.DataFrame, cases: dict[str, np.ndarray]) -> Split:
    by_case = slides.groupby("case_id")["slide_id"].apply(list)
    return Split(*(tuple(s for c in sorted(cases[n]) for s in by_case[c]) for n in SUBSETS))


def _draw(rng: np.random.Generator, pl: pd.Series, frac: float, pool: np.ndarray) -> np.ndarray:
    """Stratified draw of round(n_c * frac) patients per class from ``pool`` (case ids), at least
    one per class when frac > 0."""
    out = []
    for c in sorted(pl.unique()):
        ids = np.array(sorted(set(pool) & set(pl.index[pl == c])))
        n = min(len(ids), max(1 if frac > 0 else 0, int(round(len(pl.index[pl == c]) * frac))))
        out.append(rng.choice(ids, n, replace=False) if n else np.array([], dtype=object))
    return np.concatenate(out) if out else np.array([], dtype=object)


def holdout_split(slides: pd.DataFrame, *, val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 1,
                  class_names: list[str] | None = None) -> Split:
    """One stratified patient-level hold-out split (70/15/15 by default).

    Raises:
        ConfigError: a class with fewer than 3 patients (one per subset), or a single class.
    """
    return monte_carlo_splits(slides, k=1, val_frac=val_frac, test_frac=test_frac, seed=seed,
                              class_names=class_names, what="70/15/15 hold-out" if (val_frac, test_frac) == (0.15, 0.15) else "hold-out")[0]


def monte_carlo_splits(slides: pd.DataFrame, *, k: int, val_frac: float = 0.1, test_frac: float = 0.1,
                       label_frac: float = 1.0, seed: int = 1, class_names: list[str] | None = None,
                       what: str = "Monte-Carlo split") -> list[Split]:
    """CLAM's k Monte-Carlo folds (module docstring); fold i draws with ``seed + i``.

    Raises:
        ConfigError: a class with fewer patients than subsets needing one (val, test, train).
    """
    pl = patient_labels(slides)
    _check_enough(pl, 1 + (val_frac > 0) + (test_frac > 0), what, class_names)
    folds = []
    for i in range(k):
        rng = np.random.default_rng(seed + i)
        val = _draw(rng, pl, val_frac, pl.index.to_numpy())
        test = _draw(rng, pl, test_frac, np.setdiff1d(pl.index.to_numpy(), val))
        train = np.setdiff1d(pl.index.to_numpy(), np.concatenate([val, test]))
        if label_frac < 1.0:
            train = _draw(rng, pl.loc[train], label_frac, train)
        folds.append(_expand(slides, {"train": train, "val": val, "test": test}))
    return folds


def kfold_splits(slides: pd.DataFrame, *, k: int = 5, val_frac: float = 0.15, seed: int = 1,
                 class_names: list[str] | None = None) -> list[Split]:
    """Stratified k-fold over patients: each patient is in exactly one test subset.

    Raises:
        ConfigError: a class with fewer than k + 1 patients (k test folds and one for val).
    """
    pl = patient_labels(slides)
    _check_enough(pl, k + (val_frac > 0), f"{k}-fold split", class_names)
    cases = pl.index.to_numpy()
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for i, (rest, test) in enumerate(skf.split(cases, pl.to_numpy())):
        rng = np.random.default_rng(seed + i)
        rest_pl = pl.iloc[rest]
        val = _draw(rng, rest_pl, val_frac, cases[rest]) if val_frac > 0 else np.array([], dtype=object)
        train = np.setdiff1d(cases[rest], val)
        folds.append(_expand(slides, {"train": train, "val": val, "test": cases[test]}))
    return folds


def make_splits(slides: pd.DataFrame, *, mode: str, k: int, val_frac: float, test_frac: float, label_frac: float,
                seed: int, class_names: list[str] | None = None) -> list[Split]:
    """Folds by ``mode`` (``holdout`` | ``kfold`` | ``monte_carlo``), see the module docstring."""
    if mode == "holdout":
        return [holdout_split(slides, val_frac=val_frac, test_frac=test_frac, seed=seed, class_names=class_names)]
    if mode == "kfold":
        return kfold_splits(slides, k=k, val_frac=val_frac, seed=seed, class_names=class_names)
    return monte_carlo_splits(slides, k=k, val_frac=val_frac, test_frac=test_frac, label_frac=label_frac,
                              seed=seed, class_names=class_names)


def write_split_csv(path: str | os.PathLike[str], split: Split) -> Path:
    """Write CLAM's ``splits_{k}.csv`` (atomic)."""
    df = pd.concat([pd.Series(list(split.subset(n)), name=n, dtype=object) for n in SUBSETS], axis=1)
    with atomic_path(path) as tmp:
        df.to_csv(tmp)
    return Path(path)


def read_split_csv(path: str | os.PathLike[str], slides: pd.DataFrame | None = None) -> Split:
    """Read CLAM's ``splits_{k}.csv``; with ``slides`` (the cohort), ids not in it are dropped
    with a warning and the split is checked (:func:`check_split`).

    Raises:
        ConfigError: missing file or column, a slide in two subsets, a patient in two subsets.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"split file {path} not found; --split_dir must hold CLAM's splits_{{k}}.csv")
    df = pd.read_csv(path, dtype=str)
    missing = [n for n in SUBSETS if n not in df.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; CLAM's split files have train, val, test")
    subsets = {n: [s.strip() for s in df[n].dropna()] for n in SUBSETS}
    if slides is not None:
        known = set(slides["slide_id"])
        gone = [s for n in SUBSETS for s in subsets[n] if s not in known]
        if gone:
            log.warning("%s: %d slide(s) not in the cohort (no features or not in the CSV) are left out, e.g. %s",
                        path, len(gone), gone[0])
        subsets = {n: [s for s in v if s in known] for n, v in subsets.items()}
    split = Split(*(tuple(subsets[n]) for n in SUBSETS))
    check_split(split, slides, source=str(path))
    return split


def check_split(split: Split, slides: pd.DataFrame | None, *, source: str) -> None:
    """Raise unless every slide and (with ``slides``) every patient is in one subset only.

    Raises:
        ConfigError: names the slide or case and both subsets.
    """
    seen: dict[str, str] = {}
    for n in SUBSETS:
        for s in split.subset(n):
            if s in seen and seen[s] != n or s in seen and split.subset(n).count(s) > 1:
                raise ConfigError(f"{source}: slide {s!r} is in both {seen[s]} and {n}; a slide belongs to one subset")
            seen[s] = n
    if slides is None:
        return
    case = dict(zip(slides["slide_id"], slides["case_id"]))
    where: dict[str, str] = {}
    for n in SUBSETS:
        for s in split.subset(n):
            c = case.get(s)
            if c is None:
                continue
            if where.setdefault(c, n) != n:
                raise ConfigError(f"{source}: patient {c!r} has slides in both {where[c]} and {n} (e.g. {s!r}); "
                                  "patient-level splits keep a case_id in one subset")
