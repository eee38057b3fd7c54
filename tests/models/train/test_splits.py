"""models.train.splits: patient-level stratified folds and CLAM's splits_{k}.csv."""
from __future__ import annotations

import pandas as pd
import pytest

from models.train.splits import (
    Split, check_split, holdout_split, kfold_splits, monte_carlo_splits, read_split_csv, write_split_csv,
)
from wsi_core.errors import ConfigError


def _slides(n_patients: int = 20, per: int = 2) -> pd.DataFrame:
    rows = [{"case_id": f"p{p:02d}", "slide_id": f"s{p:02d}_{s}", "label": "ab"[p % 2], "y": p % 2}
            for p in range(n_patients) for s in range(per)]
    return pd.DataFrame(rows)


def _cases(df, ids):
    return set(df.set_index("slide_id").loc[list(ids), "case_id"])


def _no_patient_twice(df, split: Split) -> None:
    tr, va, te = (_cases(df, split.subset(n)) for n in ("train", "val", "test"))
    assert not (tr & va or tr & te or va & te)


def test_holdout_is_patient_level_stratified_70_15_15() -> None:
    df = _slides(40)
    split = holdout_split(df, seed=3)
    _no_patient_twice(df, split)
    assert len(split.train) + len(split.val) + len(split.test) == len(df)
    y = df.set_index("slide_id")["y"]
    for sub, n_pat in (("val", 3), ("test", 3)):   # round(20 * .15) = 3 patients per class
        assert y.loc[list(split.subset(sub))].value_counts().to_dict() == {0: 2 * n_pat, 1: 2 * n_pat}
    assert holdout_split(df, seed=3) == split and holdout_split(df, seed=4) != split


def test_kfold_puts_each_patient_in_one_test_fold() -> None:
    df = _slides(20)
    folds = kfold_splits(df, k=5, val_frac=0.15, seed=1)
    tests = [s for f in folds for s in f.test]
    assert sorted(tests) == sorted(df["slide_id"]) and len(folds) == 5
    for f in folds:
        _no_patient_twice(df, f)
        assert set(df.set_index("slide_id").loc[list(f.test), "y"]) == {0, 1}


def test_monte_carlo_label_frac_and_fold_seeds() -> None:
    df = _slides(40)
    folds = monte_carlo_splits(df, k=3, val_frac=0.1, test_frac=0.1, label_frac=0.5, seed=1)
    assert len({f.test for f in folds}) == 3
    for f in folds:
        _no_patient_twice(df, f)
        assert len(_cases(df, f.val)) == 4 and len(_cases(df, f.test)) == 4
        assert len(_cases(df, f.train)) == 16   # half of the 32 remaining patients


def test_clam_split_csv_round_trip_and_format(tmp_path) -> None:
    df = _slides(20)
    split = holdout_split(df, seed=1)
    path = write_split_csv(tmp_path / "splits_0.csv", split)
    raw = pd.read_csv(path)
    assert list(raw.columns) == ["Unnamed: 0", "train", "val", "test"]
    assert len(raw) == len(split.train) and raw["test"].notna().sum() == len(split.test)
    assert read_split_csv(path, df) == split


def test_a_published_clam_split_is_read_as_is(tmp_path) -> None:
    df = _slides(6, per=1)
    (tmp_path / "splits_0.csv").write_text(",train,val,test\n0,s00_0,s02_0,s04_0\n1,s01_0,s03_0,s05_0\n2,gone,,\n")
    split = read_split_csv(tmp_path / "splits_0.csv", df)
    assert split == Split(("s00_0", "s01_0"), ("s02_0", "s03_0"), ("s04_0", "s05_0"))


def test_bad_splits(tmp_path) -> None:
    df = _slides(6)
    (tmp_path / "two.csv").write_text(",train,val,test\n0,s00_0,s00_0,s01_0\n")
    with pytest.raises(ConfigError, match="slide 's00_0' is in both train and val"):
        read_split_csv(tmp_path / "two.csv", df)
    (tmp_path / "pat.csv").write_text(",train,val,test\n0,s00_0,s01_0,s00_1\n")
    with pytest.raises(ConfigError, match="patient 'p00' has slides in both train and test"):
        read_split_csv(tmp_path / "pat.csv", df)
    (tmp_path / "cols.csv").write_text(",train,test\n0,s00_0,s01_0\n")
    with pytest.raises(ConfigError, match="missing column\\(s\\) val"):
        read_split_csv(tmp_path / "cols.csv", df)
    with pytest.raises(ConfigError, match="class 'a' has 2 patient\\(s\\); a stratified 70/15/15 hold-out needs at least 3"):
        holdout_split(_slides(4), class_names=["a", "b"])
    with pytest.raises(ConfigError, match="a stratified 5-fold split needs at least 6 per class"):
        kfold_splits(_slides(10), k=5)
    with pytest.raises(ConfigError, match="patient 'p00'"):
        check_split(Split(("s00_0",), (), ("s00_1",)), df, source="x")
