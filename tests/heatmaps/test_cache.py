"""Feature cache: miss -> put -> hit (byte-identical), corrupt entries removed, keys change with
every input that changes the features, slide identity follows content not names."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from heatmaps.cache import (
    CODE_VERSION, FEATURES_FORMAT, FeatureCache, array_sha256, slide_identity, weights_sha256,
)
from wsi_core.errors import ConfigError, SlideOpenError

PATCH = {"patch_level": 0, "patch_size": 256, "custom_downsample": 1, "target_img_size": 224}


def _tiff(path: Path, seed: int, *, tiled: bool = True) -> Path:
    img = np.random.default_rng(seed).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    if tiled:   # a pyramid-less tiled TIFF: OpenSlide's generic-tiff opens it (quickhash path)
        tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb")
    else:       # a strip TIFF: OpenSlide refuses it (head/tail bytes path)
        tifffile.imwrite(path, img, photometric="rgb")
    return path


@pytest.fixture
def bag():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(37, 16)).astype(np.float32)
    coords = (rng.integers(0, 40, (37, 2)) * 256).astype(np.int64)
    return feats, coords


@pytest.fixture
def cache_and_key(tmp_path, bag):
    slide = _tiff(tmp_path / "s1.tif", 0)
    cache = FeatureCache(tmp_path / "cache")
    key = cache.key(slide, encoder_name="resnet50_trunc", weights_sha256="ab" * 32,
                    patch_params={**PATCH, "coords_sha256": array_sha256(bag[1])})
    return cache, key


def test_miss_put_hit_byte_identical(cache_and_key, bag, caplog):
    cache, key = cache_and_key
    assert len(key) == 64 and cache.get(key) is None
    path = cache.put(key, bag[0], bag[1], {"slide_id": "s1", "encoder": "resnet50_trunc", "extra": None,
                                           "patch": {"size": 256}})
    assert path == cache.path(key) and path.is_file() and not list(path.parent.glob("*.tmp-*"))
    with caplog.at_level(logging.INFO, logger="heatmaps"):
        feats, coords = cache.get(key)
    assert feats.dtype == np.float32 and coords.dtype == np.int64
    assert feats.tobytes() == bag[0].tobytes() and coords.tobytes() == bag[1].tobytes()
    assert f"features of s1 read from cache {path}" in caplog.text
    with h5py.File(path, "r") as f:
        assert f.attrs["cache_key"] == key and f.attrs["features_format"] == FEATURES_FORMAT
        assert f.attrs["code_version"] == CODE_VERSION and f.attrs["patch"] == '{"size": 256}'
        assert "extra" not in f.attrs


def test_put_casts_and_validates(cache_and_key, bag):
    cache, key = cache_and_key
    cache.put(key, bag[0].astype(np.float64), bag[1].astype(np.int32))
    feats, coords = cache.get(key, slide="s1")
    assert feats.dtype == np.float32 and coords.dtype == np.int64
    with pytest.raises(ValueError, match="not \\(N, D\\) / \\(N, 2\\) of one N"):
        cache.put(key, bag[0][:5], bag[1])
    bad = bag[0].copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        cache.put(key, bad, bag[1])


def _corrupt_truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _corrupt_key(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs["cache_key"] = "0" * 64


def _corrupt_nan(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["features"][0, 0] = np.nan


def _corrupt_missing(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        del f["coords"]


def _corrupt_rows(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["coords"].resize((3, 2))


@pytest.mark.parametrize(("damage", "why"), [
    (_corrupt_truncate, "not readable as HDF5"),
    (_corrupt_key, "stored cache_key"),
    (_corrupt_nan, "NaN or Inf"),
    (_corrupt_missing, "dataset coords missing"),
    (_corrupt_rows, "37 feature rows but 3 coords"),
])
def test_corrupt_entry_removed(cache_and_key, bag, caplog, damage, why):
    cache, key = cache_and_key
    path = cache.put(key, *bag)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="heatmaps"):
        assert cache.get(key) is None
    assert not path.exists()
    assert f"cache entry {path} is corrupt (" in caplog.text and why in caplog.text
    assert "); recomputing" in caplog.text
    cache.put(key, *bag)                       # recomputed and stored again
    assert cache.get(key) is not None


def test_keys_change_with_every_input(tmp_path, bag):
    slide = _tiff(tmp_path / "s1.tif", 0)
    cache = FeatureCache(tmp_path / "cache")
    base = dict(encoder_name="resnet50_trunc", weights_sha256="ab" * 32,
                patch_params={**PATCH, "coords_sha256": array_sha256(bag[1])})
    k0 = cache.key(slide, **base)
    assert cache.key(slide, **base) == k0                                     # deterministic
    assert cache.key(slide, **{**base, "patch_params": dict(reversed(list(base["patch_params"].items())))}) == k0
    variants = [
        {**base, "encoder_name": "uni_v2"},
        {**base, "weights_sha256": "cd" * 32},
        {**base, "patch_params": {**base["patch_params"], "patch_size": 512}},
        {**base, "patch_params": {**base["patch_params"], "target_img_size": 32}},
        {**base, "patch_params": {**base["patch_params"], "coords_sha256": array_sha256(bag[1][:-1])}},
        {**base, "code_version": "0.2.0+features.1"},
    ]
    keys = {cache.key(slide, **v) for v in variants}
    assert len(keys) == len(variants) and k0 not in keys
    assert cache.key(_tiff(tmp_path / "other.tif", 5), **base) != k0
    with pytest.raises(ValueError, match="patch_params value"):
        cache.key(slide, **{**base, "patch_params": {"x": object()}})


@pytest.mark.parametrize("tiled", [True, False])
def test_slide_identity_follows_content(tmp_path, tiled):
    a = _tiff(tmp_path / "a.tif", 0, tiled=tiled)
    copy = tmp_path / "sub" / "renamed.tif"
    copy.parent.mkdir()
    shutil.copyfile(a, copy)
    b = _tiff(tmp_path / "b.tif", 1, tiled=tiled)
    ida = slide_identity(a)
    assert ida.startswith("qh1:" if tiled else "ht:")
    assert slide_identity(copy) == ida
    assert slide_identity(b) != ida


def test_head_tail_hash_sees_the_tail(tmp_path):
    """Without an OpenSlide quickhash only the first and last MiB are hashed (plus the size): a
    3 MiB file whose middle byte changes is (knowingly) the same slide; a change at the end is not."""
    data = np.random.default_rng(0).integers(0, 255, 3 << 20, dtype=np.uint8).tobytes()
    p1, p2, p3 = tmp_path / "1.bin", tmp_path / "2.bin", tmp_path / "3.bin"
    p1.write_bytes(data)
    p2.write_bytes(data[:(3 << 19)] + b"x" + data[(3 << 19) + 1:])
    p3.write_bytes(data[:-1] + b"\x00" if data[-1] else data[:-1] + b"\x01")
    assert slide_identity(p1) == slide_identity(p2)
    assert slide_identity(p1) != slide_identity(p3)


def test_missing_paths(tmp_path):
    with pytest.raises(SlideOpenError, match="slide file not found: .*nope.svs; check data_dir"):
        slide_identity(tmp_path / "nope.svs")
    with pytest.raises(ConfigError, match="encoder weights not found: .*w.pth; fix encoder_arguments.weights_path"):
        weights_sha256(tmp_path / "w.pth")


def test_weights_sha256_streams(tmp_path):
    import hashlib

    data = np.random.default_rng(2).integers(0, 255, (5 << 20) // 2, dtype=np.uint8).tobytes()
    p = tmp_path / "w.pth"
    p.write_bytes(data)
    assert weights_sha256(p) == hashlib.sha256(data).hexdigest()


@pytest.mark.shared
def test_real_slides_and_dicom_folder(shared_dir, tmp_path):
    slides = shared_dir / "slides"
    svs = slides / "CMU-1-Small-Region.svs"
    copy = tmp_path / "copy.svs"
    shutil.copyfile(svs, copy)
    ids = slide_identity(svs)
    assert ids.startswith("qh1:") and slide_identity(copy) == ids
    assert slide_identity(slides / "tcga-cr-7395-01a-01-ts1.svs") != ids
    dcm = slides / "dicom_cmu-1-small-region"
    dcm_copy = tmp_path / "dicom_copy"
    shutil.copytree(dcm, dcm_copy)
    idd = slide_identity(dcm)
    assert idd.startswith("dcm:") and slide_identity(dcm_copy) == idd and idd != ids
    (dcm_copy / "level-0-frames-0-30.dcm").unlink()
    assert slide_identity(dcm_copy) != idd
