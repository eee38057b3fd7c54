"""Feature cache: patch features kept under ``cache_dir`` and found again by content, not by name.

An entry is one HDF5 file ``{cache_dir}/features/{key}.h5`` holding ``features`` float32 (N, D)
and ``coords`` int64 (N, 2) level-0 top-left (x, y), with file attributes ``cache_key`` (= the
key), ``features_format``, ``code_version`` and whatever the writer adds (slide, encoder, ...).

The key (:meth:`FeatureCache.key`) is the sha256 of a canonical JSON of

* the slide's **content identity** (:func:`slide_identity`; a renamed or copied slide hits, a
  different slide under the same name misses) - never a hash of the whole multi-GB file;
* the encoder name and the sha256 of its weights file (:func:`weights_sha256`);
* the patch parameters (patch_level, patch_size, custom_downsample, target_img_size, and the
  sha256 of the coords array, :func:`array_sha256`, which pins segmentation and grid);
* :data:`CODE_VERSION` (package version + :data:`FEATURES_FORMAT`).

Reading validates the entry (readable HDF5, both datasets, consistent shapes, finite, stored key
equal to the key); a bad entry is deleted with the warning
``cache entry <path> is corrupt (<why>); recomputing`` and the caller extracts again.
Writes are atomic (:func:`wsi_core.io.write_h5`), so concurrent runs never see half an entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from wsi_core.errors import ConfigError, SlideOpenError
from wsi_core.formats import COORDS, FEATURES
from wsi_core.io import read_rows, write_h5

__all__ = [
    "FeatureCache", "slide_identity", "weights_sha256", "array_sha256", "FEATURES_FORMAT",
    "CODE_VERSION",
]

log = logging.getLogger(__name__)

FEATURES_FORMAT = 1                 # bump when the cached layout or the extraction semantics change
HEAD_TAIL_BYTES = 1 << 20           # bytes hashed at each end of a slide without an OpenSlide quickhash
DICOM_HEADER_BYTES = 1 << 16        # bytes hashed at the start of each DICOM file (UIDs live there)
_CHUNK = 1 << 20


def _package_version() -> str:
    try:
        return metadata.version("wsi-heatmaps")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


CODE_VERSION = f"{_package_version()}+features.{FEATURES_FORMAT}"


def _sha256_file(path: Path, *, start: int = 0, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            block = f.read(_CHUNK if left is None else min(_CHUNK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def _quickhash(path: Path) -> str | None:
    """OpenSlide's ``openslide.quickhash-1`` (a hash of the slide's smallest level and its
    properties), or None when OpenSlide cannot open the file or gives none."""
    try:
        import openslide

        with openslide.OpenSlide(str(path)) as osr:
            return osr.properties.get("openslide.quickhash-1")
    except Exception:  # noqa: BLE001 - any format OpenSlide rejects falls back to head/tail bytes
        return None


def slide_identity(slide_path: str | os.PathLike[str]) -> str:
    """A content identity of a slide that is cheap to compute and survives copies and renames.

    * a file: ``'qh1:<size>:<openslide.quickhash-1>'`` when OpenSlide opens it and gives one, else
      ``'ht:<size>:<sha256 of the first and the last 1 MiB>'``;
    * a folder (DICOM WSI): ``'dcm:<sha256>'`` over the sorted file names, sizes and the sha256
      of the first 64 KiB of each file (the instance UIDs are in the header).

    Raises:
        SlideOpenError: the path does not exist.
    """
    p = Path(slide_path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.iterdir() if q.is_file()):
            h.update(f"{f.name}\0{f.stat().st_size}\0{_sha256_file(f, length=DICOM_HEADER_BYTES)}\n".encode())
        return f"dcm:{h.hexdigest()}"
    if not p.is_file():
        raise SlideOpenError(f"slide file not found: {p}; check data_dir / slide_ext in data_arguments")
    size = p.stat().st_size
    qh = _quickhash(p)
    if qh:
        return f"qh1:{size}:{qh}"
    h = hashlib.sha256()
    h.update(_sha256_file(p, length=HEAD_TAIL_BYTES).encode())
    h.update(_sha256_file(p, start=max(0, size - HEAD_TAIL_BYTES)).encode())
    return f"ht:{size}:{h.hexdigest()}"


_WEIGHTS_MEMO: dict[tuple[str, int, int], str] = {}


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of an encoder weights file, streamed in 1 MiB blocks; memoised per
    (path, size, mtime) so a run hashes a multi-GB checkpoint once.

    Raises:
        ConfigError: the file does not exist (names ``encoder_arguments.weights_path``).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"encoder weights not found: {p}; fix encoder_arguments.weights_path")
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _WEIGHTS_MEMO:
        _WEIGHTS_MEMO[memo] = _sha256_file(p)
    return _WEIGHTS_MEMO[memo]


def array_sha256(arr: np.ndarray) -> str:
    """sha256 (hex) of an array's dtype, shape and C-order bytes (e.g. the coords of a bag)."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise ValueError(f"cache key: patch_params value {obj!r} ({type(obj).__name__}) is not a plain number/string")


class _Corrupt(Exception):
    """An entry that cannot be trusted (message: why)."""


def _h5_value(v: Any) -> Any:
    if isinstance(v, Mapping):
        return json.dumps(_canonical(v), sort_keys=True)
    if isinstance(v, (Path, os.PathLike)):
        return os.fspath(v)
    return v


class FeatureCache:
    """Features of patch bags under ``cache_dir`` (see the module docstring).

    Usage::

        cache = FeatureCache(cfg.exp_arguments.cache_dir)
        key = cache.key(slide.path, encoder_name="resnet50_trunc", weights_sha256=wsha,
                        patch_params={..., "coords_sha256": array_sha256(coords)})
        hit = cache.get(key, slide=slide_id)
        if hit is None:
            feats = extract(...)
            cache.put(key, feats, coords, {"slide_id": slide_id, "encoder": "resnet50_trunc"})
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)
        self._ids: dict[tuple[str, int, int], str] = {}

    def path(self, key: str) -> Path:
        """``{cache_dir}/features/{key}.h5``."""
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a lowercase hex digest, got {key!r}")
        return self.cache_dir / "features" / f"{key}.h5"

    def identity(self, slide_path: str | os.PathLike[str]) -> str:
        """:func:`slide_identity`, memoised per (path, size, mtime) for files."""
        p = Path(slide_path)
        if p.is_dir():
            return slide_identity(p)
        try:
            st = p.stat()
        except FileNotFoundError:
            return slide_identity(p)  # raises SlideOpenError
        memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if memo not in self._ids:
            self._ids[memo] = slide_identity(p)
        return self._ids[memo]

    def key(self, slide_path: str | os.PathLike[str], *, encoder_name: str, weights_sha256: str,
            patch_params: Mapping[str, Any], code_version: str = CODE_VERSION) -> str:
        """The cache key (64 hex chars) of a slide's features under these settings.

        Args:
            slide_path: the slide file or DICOM folder (its content identity is hashed).
            encoder_name: registry name of the encoder. weights_sha256: its weights' sha256 (or
                another stable id of where the weights came from).
            patch_params: plain numbers/strings (nested lists / dicts allowed), e.g.
                ``{"patch_level": 0, "patch_size": 256, "custom_downsample": 1,
                "target_img_size": 224, "coords_sha256": array_sha256(coords)}``.
            code_version: :data:`CODE_VERSION` unless testing.

        Raises:
            SlideOpenError: the slide path does not exist. ValueError: a non-plain patch param.
        """
        payload = {"slide": self.identity(slide_path), "encoder": str(encoder_name),
                   "weights_sha256": str(weights_sha256), "patch": _canonical(dict(patch_params)),
                   "code_version": str(code_version)}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str, *, slide: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached ``(features (N, D) float32, coords (N, 2) int64)``, or None on a miss.

        A corrupt entry (unreadable, datasets missing, shapes inconsistent, NaN/Inf, key
        mismatch) is deleted, logged as a warning and reported as a miss. A hit is logged
        (info) as ``features of <slide> read from cache <path>``.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            feats, coords, attrs = _read_entry(path, key)
        except _Corrupt as exc:
            log.warning("cache entry %s is corrupt (%s); recomputing", path, exc)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as err:  # pragma: no cover - read-only cache
                log.warning("cannot delete corrupt cache entry %s (%s)", path, err)
            return None
        name = slide or attrs.get("slide_id") or attrs.get("slide") or "slide"
        log.info("features of %s read from cache %s", name, path)
        return feats, coords

    def put(self, key: str, features: np.ndarray, coords: np.ndarray,
            attrs: Mapping[str, Any] | None = None) -> Path:
        """Store a bag atomically (``features`` as float32, ``coords`` as int64).

        Args:
            attrs: extra file attributes (numbers, strings, lists; dicts are stored as JSON;
                None values are left out), e.g. slide_id, encoder, weights_sha256.

        Returns:
            The entry's path.

        Raises:
            ValueError: features not (N, D), coords not (N, 2) integers, counts differ, NaN/Inf.
            WsiHeatmapsError: the cache directory is not writable or the disk is full.
        """
        feats = np.ascontiguousarray(features, dtype=np.float32)
        c = np.asarray(coords)
        if feats.ndim != 2 or c.ndim != 2 or c.shape[1:] != (2,) or len(feats) != len(c):
            raise ValueError(f"cache put: features {feats.shape} / coords {c.shape} are not (N, D) / (N, 2) of one N")
        if c.dtype.kind not in "iu" or not np.all(np.isfinite(feats)):
            raise ValueError("cache put: coords must be integers and features finite")
        meta = {k: _h5_value(v) for k, v in dict(attrs or {}).items() if v is not None}
        meta.update(cache_key=key, features_format=FEATURES_FORMAT, code_version=CODE_VERSION)
        return write_h5(self.path(key), {FEATURES: feats, COORDS: np.ascontiguousarray(c, dtype=np.int64)},
                        attrs={"/": meta})


def _read_entry(path: Path, key: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read and validate one entry; raises _Corrupt(why)."""
    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError and others for broken files
        raise _Corrupt(f"not readable as HDF5: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        with f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            stored = attrs.get("cache_key")
            if stored != key:
                raise _Corrupt(f"stored cache_key {stored!r} is not the file's key")
            missing = [n for n in (FEATURES, COORDS) if not isinstance(f.get(n), h5py.Dataset)]
            if missing:
                raise _Corrupt(f"dataset {', '.join(missing)} missing")
            feats, coords = read_rows(f[FEATURES]), read_rows(f[COORDS])
    except _Corrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated data raises OSError/RuntimeError/KeyError
        raise _Corrupt(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}") from None
    if feats.ndim != 2 or feats.dtype != np.float32:
        raise _Corrupt(f"features are {feats.dtype} {feats.shape}, not float32 (N, D)")
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.dtype != np.int64:
        raise _Corrupt(f"coords are {coords.dtype} {coords.shape}, not int64 (N, 2)")
    if len(feats) != len(coords):
        raise _Corrupt(f"{len(feats)} feature rows but {len(coords)} coords")
    if not np.all(np.isfinite(feats)):
        raise _Corrupt("features hold NaN or Inf")
    return feats, coords, attrs
