"""wsi_core.io: atomic writes and CLAM-layout HDF5."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from wsi_core import FeatureFileError, WsiHeatmapsError, atomic_path, read_h5, write_h5
from wsi_core.io import read_rows


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".tmp-" in p.name)


def test_atomic_path_writes_via_temp_sibling(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dir" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp == target.with_name(f"out.txt.tmp-{os.getpid()}")
        assert tmp.parent.is_dir()
        tmp.write_text("hello")
        assert not target.exists()
    assert target.read_text() == "hello"
    assert _leftovers(target.parent) == []


def test_atomic_path_error_keeps_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_path_disk_full_is_reported(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.h5"
    target.write_text("old")

    def full(src, dst):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WsiHeatmapsError) as ei:
        with atomic_path(target) as tmp:
            tmp.write_text("new")
    msg = str(ei.value)
    assert msg.startswith(f"cannot write {target}: No space left on device")
    assert "disk is full" in msg and "\n" not in msg
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_path_enospc_inside_writer(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(WsiHeatmapsError, match="cannot write .*out.bin: No space left"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not target.exists() and _leftovers(tmp_path) == []


def test_atomic_path_permission_error(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.txt"

    def denied(src, dst):  # noqa: ANN001
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(WsiHeatmapsError, match=r"cannot write .*out.txt: Permission denied.*writable"):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
    assert _leftovers(tmp_path) == []


def test_atomic_path_unwritable_parent(tmp_path: Path, monkeypatch) -> None:
    def denied(self, *a, **k):  # noqa: ANN001
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(WsiHeatmapsError, match="cannot write .*new/out.txt: Permission denied"):
        with atomic_path(tmp_path / "new" / "out.txt"):
            pass


def test_write_h5_clam_layout(tmp_path: Path) -> None:
    coords = np.arange(100, dtype=np.int64).reshape(50, 2)
    feats = np.random.default_rng(0).random((50, 8), dtype=np.float32)
    small = np.ones((3, 1), dtype=np.float32)
    out = write_h5(
        tmp_path / "a.h5",
        {"coords": coords, "features": feats, "attention_scores": small},
        attrs={"coords": {"patch_size": 256, "patch_level": 0}, "/": {"slide_id": "s1"}},
    )
    with h5py.File(out) as f:
        assert f["coords"].chunks == (50, 2) and f["coords"].maxshape == (None, 2)     # whole file: < 256 KiB
        assert f["features"].chunks == (50, 8) and f["features"].maxshape == (None, 8)
        assert f["attention_scores"].chunks == (3, 1)
        assert f["coords"].dtype == np.int64 and f["features"].dtype == np.float32
        assert f["coords"].attrs["patch_size"] == 256
        assert f.attrs["slide_id"] == "s1"
    got = read_h5(out, ["coords", "features"])
    np.testing.assert_array_equal(got["coords"], coords)
    np.testing.assert_array_equal(got["features"], feats)
    assert _leftovers(tmp_path) == []
    big = write_h5(tmp_path / "b.h5", {"coords": np.zeros((100_000, 2), np.int64),
                                       "features": np.zeros((100, 1024), np.float32)})
    with h5py.File(big) as f:
        assert f["coords"].chunks == (16_384, 2)       # 256 KiB
        assert f["features"].chunks == (64, 1024)      # 256 KiB


def test_write_h5_unknown_attr_target(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown datasets"):
        write_h5(tmp_path / "a.h5", {"coords": np.zeros((2, 2))}, attrs={"nope": {"a": 1}})


def test_read_h5_missing_dataset_names_file(tmp_path: Path) -> None:
    p = write_h5(tmp_path / "feat.h5", {"coords": np.zeros((4, 2), np.int64)})
    with pytest.raises(FeatureFileError) as ei:
        read_h5(p, ["coords", "features"])
    msg = str(ei.value)
    assert str(p) in msg and "'features'" in msg and "['coords']" in msg


def test_read_h5_missing_and_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(FeatureFileError, match="feature file not found: .*nope.h5"):
        read_h5(tmp_path / "nope.h5", ["coords"])
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(FeatureFileError, match=r"cannot read .*bad.h5 as HDF5"):
        read_h5(bad, ["coords"])


def test_read_clam_h5(clam_reference_dir: Path) -> None:
    p = (clam_reference_dir / "real_sb/heatmap_raw_results/REAL_SB/class_a/CMU-1-Small-Region"
         / "CMU-1-Small-Region.h5")
    got = read_h5(p, ["coords", "features"])
    assert got["coords"].shape == (30, 2) and got["coords"].dtype == np.int64
    assert got["features"].shape == (30, 1024) and got["features"].dtype == np.float32


@pytest.mark.parametrize("chunk_rows", [1, 7, 1024, 5000, None])
def test_read_rows_reads_the_whole_dataset_in_slabs(tmp_path: Path, chunk_rows) -> None:
    """CLAM writes 1-row chunks; read_rows reads them in slabs of whole chunks, same array."""
    data = np.arange(3001 * 3, dtype=np.float32).reshape(3001, 3)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("x", data=data, chunks=None if chunk_rows is None else (chunk_rows, 3),
                         maxshape=None if chunk_rows is None else (None, 3))
        f.create_dataset("scalar", data=3.5)
    with h5py.File(tmp_path / "c.h5") as f:
        got = read_rows(f["x"])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, data)
        assert read_rows(f["scalar"]) == 3.5
