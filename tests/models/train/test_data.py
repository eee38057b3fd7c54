"""models.train.data: the dataset CSV, the features directory and bad bags."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from models.pt_features import write_pt_features
from models.train.data import BagDataset, build_cohort, parse_label_dict, read_dataset_csv
from wsi_core.errors import ConfigError
from wsi_core.formats import write_features_h5, write_trident_features_h5

from .cohort import grid_coords


def _csv(tmp_path, rows, name="d.csv"):
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def _rows(n=4):
    return [{"case_id": f"p{i}", "slide_id": f"s{i}", "label": ["normal", "tumor"][i % 2]} for i in range(n)]


def test_dataset_csv_errors(tmp_path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("patient,slide_id,label\np0,s0,tumor\n")
    with pytest.raises(ConfigError, match="bad.csv: missing column\\(s\\) case_id"):
        read_dataset_csv(p, None)
    with pytest.raises(ConfigError, match="slide 's1' has label 'tumor', not in label_dict \\(normal, other\\)"):
        read_dataset_csv(_csv(tmp_path, _rows()), {"normal": 0, "other": 1})
    df, ld = read_dataset_csv(_csv(tmp_path, _rows()), None)
    assert ld == {"normal": 0, "tumor": 1} and list(df["y"]) == [0, 1, 0, 1]
    with pytest.raises(ConfigError, match="must map class names to integers"):
        parse_label_dict('["a"]')
    assert parse_label_dict('{"a": 0, "b": 1}') == {"a": 0, "b": 1}


def test_layouts_and_skipped_slides(tmp_path, caplog) -> None:
    rng = np.random.default_rng(0)
    clam, trident = tmp_path / "clam", tmp_path / "trident"
    for i in range(4):
        h = rng.standard_normal((5, 8)).astype(np.float32)
        if i == 1:
            h[2, 3] = np.nan
        write_pt_features(clam / "pt_files" / f"s{i}.pt", h if i != 2 else h[:0])
        write_features_h5(clam / "h5_files" / f"s{i}.h5", h, grid_coords(5))
        write_trident_features_h5(trident / f"s{i}.h5", h, grid_coords(5), patch_size=256, patch_size_level0=256,
                                  level0_magnification=20, target_magnification=20)
    rows = _rows(5)  # s4 has no features
    with caplog.at_level(logging.WARNING):
        cohort = build_cohort(_csv(tmp_path, rows), clam, None)
    assert list(cohort.slides["slide_id"]) == ["s0", "s3"] and cohort.dim == 8
    assert "NaN or Inf" in cohort.skipped["s1"] and "empty bag" in cohort.skipped["s2"] and "no features" in cohort.skipped["s4"]
    assert "skipping slide s4" in caplog.text
    assert cohort.sources["s0"].features.suffix == ".pt" and cohort.sources["s0"].coords.parent.name == "h5_files"
    tri = build_cohort(_csv(tmp_path, rows), trident, None)
    assert set(tri.slides["slide_id"]) == {"s0", "s2", "s3"}   # the h5 of s2 is not empty
    ds = BagDataset(tri, ["s0", "s3"], max_patches=3)
    h, y, i = ds[1]
    assert h.shape == (3, 8) and int(y) == 1 and int(i) == 1


def test_features_of_different_widths_stop_the_run(tmp_path) -> None:
    d = tmp_path / "f"
    for i in range(4):
        write_features_h5(d / f"s{i}.h5", np.zeros((3, 8 if i < 3 else 16), np.float32), grid_coords(3))
    with pytest.raises(ConfigError, match="features of different widths in one cohort \\(8-d: 3 slides \\(e.g. s0\\); 16-d: 1 slides \\(e.g. s3\\)\\)"):
        build_cohort(_csv(tmp_path, _rows()), d, None)
