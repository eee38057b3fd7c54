"""Direct decoding of the JPEG tiles of tiled TIFF slides (Aperio SVS, generic tiled TIFF).

``openslide.OpenSlide.read_region`` decodes about 35-55 Mpx/s per thread on these slides: it
composites the tiles with cairo into premultiplied ARGB, which openslide-python then converts to
RGBA. The same JPEG tiles decode at about 300 Mpx/s with OpenCV's libjpeg-turbo. For the levels
where it is exact, :class:`JpegTileReader` reads a region the way OpenSlide does - the level's
tiles (TIFF ``TileOffsets``/``TileByteCounts``, each prefixed with the page's ``JPEGTables``) are
decoded and pasted at whole-pixel offsets - without OpenSlide:

* **Which slides:** OpenSlide vendors ``aperio`` and ``generic-tiff`` (one TIFF page per level),
  pages that are tiled, JPEG-compressed (``Compression`` 7), 8-bit, 3 samples, chunky, with
  ``Photometric`` RGB or YCbCr. Other formats (NDPI, DICOM, JPEG 2000 SVS, Philips, ...) and
  other pages are read by OpenSlide as before.
* **Colour space:** OpenSlide decodes a page's JPEG data in the colour space its ``Photometric``
  tag names. For ``Photometric`` RGB (Aperio writes its JPEG tiles without the YCbCr transform)
  an Adobe APP14 marker with ``transform = 0`` is put in front of the tile's data, which tells
  libjpeg the same thing.
* **Which reads:** the level-px location ``x / d`` (``d`` = OpenSlide's level downsample) must be
  a whole non-negative number - always at level 0; at coarser levels only on their own pixel grid.
  At a fractional location OpenSlide resamples the tiles with a sub-pixel shift (see
  :mod:`wsi_core.regions`), so those reads stay with OpenSlide.
* **Edges and missing tiles:** pixels beyond the level's size and tiles stored empty
  (``TileByteCounts`` 0) are ``(0, 0, 0)``, as OpenSlide's transparent pixels are once the alpha
  channel is dropped (:meth:`wsi_core.slide.Slide.read_region`).
* **Checked, never assumed:** before a level is read this way, its largest tile (the most bytes,
  the most detail) is decoded both ways; if a single byte differs - another JPEG
  colour convention, another upsampling - the level is read by OpenSlide from then on. A tile
  OpenCV cannot decode (corrupt data) sends the read to OpenSlide, which reports the error as it
  always did.

Decoded tiles are kept in one LRU cache for the whole process, ``TILE_CACHE_BYTES`` over every
open slide (OpenSlide's own default is 32 MiB per handle), so that patch-by-patch reads decode each
tile about once and a viewer or a cohort with many slides open holds no more. Reads of many tiles decode them in
``DECODE_THREADS`` threads (``cv2.imdecode`` releases the GIL). The file is read with ``os.pread``
on one descriptor, which is safe across threads and forked workers.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

__all__ = ["JpegTileReader", "DIRECT_VENDORS", "TILE_CACHE_BYTES", "DECODE_THREADS"]

log = logging.getLogger(__name__)

#: OpenSlide vendors whose levels are single tiled TIFF pages, tile for tile.
DIRECT_VENDORS = frozenset({"aperio", "generic-tiff"})
TILE_CACHE_BYTES = 32 << 20           # decoded tiles kept, all slides of the process together
DECODE_THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                               else os.cpu_count() or 1))
PARALLEL_MIN_TILES = 8                # reads of fewer tiles are decoded in the calling thread
_JPEG = 7
_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 2, 6
#: APP14 "Adobe" segment, version 100, flags 0, transform 0: "the 3 components are RGB".
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"

#: libjpeg writes RGB itself (OpenCV >= 4.10); older OpenCV: BGR, converted per tile
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


class _TileCache:
    """Decoded tiles of every open reader: an LRU bounded by ``TILE_CACHE_BYTES`` (thread-safe)."""

    def __init__(self) -> None:
        self._tiles: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self.nbytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int, int]) -> np.ndarray | None:
        with self._lock:
            tile = self._tiles.get(key)
            if tile is not None:
                self._tiles.move_to_end(key)
            return tile

    def put(self, key: tuple[int, int, int], tile: np.ndarray) -> None:
        with self._lock:
            if key in self._tiles:
                return
            self._tiles[key] = tile
            self.nbytes += tile.nbytes
            while self.nbytes > TILE_CACHE_BYTES and len(self._tiles) > 1:
                _, old = self._tiles.popitem(last=False)
                self.nbytes -= old.nbytes

    def drop(self, owner: int) -> None:
        """Forget the tiles of one reader (key ``(owner, level, index)``)."""
        with self._lock:
            for key in [k for k in self._tiles if k[0] == owner]:
                self.nbytes -= self._tiles.pop(key).nbytes

    def __len__(self) -> int:
        return len(self._tiles)


_cache = _TileCache()
_owners = itertools.count()

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _decode_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="jpeg-tiles")
        return _pool


def _reset_after_fork() -> None:
    """A forked worker (a DataLoader worker) starts with its own threads, locks and cache: the
    parent's threads do not exist in it, and a lock held at the fork would never be released."""
    global _pool, _pool_lock, _cache
    _pool, _pool_lock, _cache = None, threading.Lock(), _TileCache()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


@dataclass
class _Level:
    """One pyramid level's JPEG tiles (level px)."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    cols: int
    offsets: np.ndarray            # (rows * cols,) int64 file offsets, row-major
    counts: np.ndarray             # (rows * cols,) int64 byte counts (0 = empty tile)
    prefix: bytes                  # the page's JPEGTables without their EOI marker, or b""
    adobe_rgb: bool
    state: str = "unchecked"       # "unchecked" | "direct" | "openslide"


def _levels_from_tiff(path: str, level_dimensions: Sequence[tuple[int, int]]) -> dict[int, _Level]:
    """The levels whose one TIFF page qualifies (see the module docstring), by OpenSlide level."""
    import tifffile

    out: dict[int, _Level] = {}
    with tifffile.TiffFile(path) as tf:
        pages = list(tf.pages)
        for level, dims in enumerate(level_dimensions):
            match = [p for p in pages if getattr(p, "is_tiled", False)
                     and (int(p.imagewidth), int(p.imagelength)) == tuple(dims)]
            if len(match) != 1:
                continue
            p = match[0]
            if (int(p.compression) != _JPEG or int(p.samplesperpixel) != 3
                    or int(p.planarconfig) != 1 or int(p.imagedepth) != 1
                    or int(p.photometric) not in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR)
                    or any(int(b) != 8 for b in np.atleast_1d(p.bitspersample))):
                continue
            tw, th = int(p.tilewidth), int(p.tilelength)
            cols, rows = -(-int(p.imagewidth) // tw), -(-int(p.imagelength) // th)
            offsets = np.asarray(p.dataoffsets, np.int64)
            counts = np.asarray(p.databytecounts, np.int64)
            if offsets.shape != (rows * cols,) or counts.shape != (rows * cols,):
                continue
            tables = bytes(p.jpegtables or b"")
            adobe = int(p.photometric) == _PHOTOMETRIC_RGB
            out[level] = _Level(int(p.imagewidth), int(p.imagelength), tw, th, cols, offsets,
                                counts, tables[:-2] if tables.endswith(b"\xff\xd9") else tables,
                                adobe)
    return out


class JpegTileReader:
    """Reads regions of a slide's JPEG-tiled TIFF levels without OpenSlide (see the module doc).

    Built by :meth:`open`; used by :meth:`wsi_core.slide.Slide.read_region`, which falls back to
    OpenSlide whenever :meth:`read` returns None.
    """

    def __init__(self, path: str, levels: dict[int, _Level],
                 reference: Callable[[tuple[int, int], int, tuple[int, int]], np.ndarray],
                 downsamples: Sequence[float]) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._levels = levels
        self._reference = reference           # OpenSlide's read: (loc, level, size) -> (h, w, 3)
        self._downsamples = [float(d) for d in downsamples]
        self._owner = next(_owners)            # this reader's part of the tile cache
        self._check_lock = threading.Lock()    # one level check at a time

    @classmethod
    def open(cls, path: str, *, vendor: str | None, level_dimensions: Sequence[tuple[int, int]],
             downsamples: Sequence[float],
             reference: Callable[[tuple[int, int], int, tuple[int, int]], np.ndarray]
             ) -> "JpegTileReader | None":
        """A reader for the slide file ``path``, or None when no level qualifies.

        Args:
            path: the file OpenSlide opened.
            vendor: OpenSlide's ``openslide.vendor`` property.
            level_dimensions: OpenSlide's ``(width, height)`` px per level.
            downsamples: OpenSlide's level downsamples (``OpenSlide.level_downsamples``).
            reference: OpenSlide's read, ``(level-0 (x, y), level, (w, h)) -> (h, w, 3) uint8``
                RGB, used to check each level once.
        """
        if vendor not in DIRECT_VENDORS:
            return None
        try:
            levels = _levels_from_tiff(path, level_dimensions)
        except Exception as exc:      # tifffile cannot parse what OpenSlide opened: stay with OpenSlide
            log.debug("%s: no direct JPEG tile reads (%s)", path, exc)
            return None
        return cls(path, levels, reference, downsamples) if levels else None

    @property
    def direct_levels(self) -> list[int]:
        """Levels checked and read directly so far (ascending)."""
        return sorted(k for k, lv in self._levels.items() if lv.state == "direct")

    def close(self) -> None:
        """Release the file descriptor and this reader's cached tiles (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        _cache.drop(self._owner)

    # ----------------------------------------------------------------------------- tiles
    def _decode(self, lv: _Level, index: int) -> np.ndarray | None:
        """Tile ``index`` of ``lv`` as ``(tile_h, tile_w, 3)`` uint8 RGB; None when corrupt."""
        n = int(lv.counts[index])
        data = os.pread(self._fd, n, int(lv.offsets[index]))
        if len(data) != n or data[:2] != b"\xff\xd8":
            return None
        head = b"\xff\xd8" + (_ADOBE_RGB if lv.adobe_rgb else b"")
        if lv.prefix:       # JPEGTables (SOI, DQT/DHT) + the tile's abbreviated stream
            stream = head + lv.prefix[2:] + data[2:]
        else:
            stream = head + data[2:]
        buf = np.frombuffer(stream, np.uint8)
        if _IMREAD_RGB is not None:
            tile = cv2.imdecode(buf, _IMREAD_RGB)
        else:   # pragma: no cover - OpenCV < 4.10
            tile = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            tile = None if tile is None else cv2.cvtColor(tile, cv2.COLOR_BGR2RGB)
        if tile is None or tile.shape != (lv.tile_h, lv.tile_w, 3):
            return None
        return tile

    def _tile(self, level: int, lv: _Level, index: int) -> np.ndarray | None:
        key = (self._owner, level, index)
        tile = _cache.get(key)
        if tile is None:
            tile = self._decode(lv, index)
            if tile is not None:
                tile.flags.writeable = False          # shared by every read that hits it
                _cache.put(key, tile)
        return tile

    def _check(self, level: int, lv: _Level) -> bool:
        """Decode the level's largest tile both ways (the most bytes: the most detail, where a
        difference in IDCT, upsampling or colour conversion shows); True when identical."""
        if not (lv.counts > 0).any():
            return False
        index = int(np.argmax(lv.counts))
        r, c = divmod(index, lv.cols)
        x, y = c * lv.tile_w, r * lv.tile_h
        w, h = min(lv.tile_w, lv.width - x), min(lv.tile_h, lv.height - y)
        tile = self._decode(lv, index)
        if tile is None:
            return False
        d = self._downsamples[level]
        ref = self._reference((int(round(x * d)), int(round(y * d))), level, (w, h))
        return bool(np.array_equal(tile[:h, :w], ref))

    def _direct(self, level: int) -> _Level | None:
        lv = self._levels.get(level)
        if lv is None or lv.state == "openslide":
            return None
        if lv.state == "unchecked":
            with self._check_lock:
                if lv.state == "unchecked":
                    ok = self._check(level, lv)
                    lv.state = "direct" if ok else "openslide"
                    if not ok:
                        log.info("level %d: its JPEG tiles decode differently from OpenSlide's "
                                 "read; it is read with OpenSlide", level)
        return lv if lv.state == "direct" else None

    # ----------------------------------------------------------------------------- regions
    def read(self, location: tuple[int, int], level: int, size: tuple[int, int]
             ) -> np.ndarray | None:
        """``(h, w, 3)`` uint8 RGB equal to OpenSlide's read of this region, or None when this
        read must go to OpenSlide (level not direct, fractional or negative location, a tile that
        does not decode).

        Args:
            location: level-0 px ``(x, y)``; level: pyramid level; size: ``(w, h)`` px at it.
        """
        lv = self._direct(level)
        if lv is None or self._fd < 0:
            return None
        d = self._downsamples[level]
        fx, fy = location[0] / d, location[1] / d
        if not (fx.is_integer() and fy.is_integer()) or fx < 0 or fy < 0:
            return None
        x, y, (w, h) = int(fx), int(fy), (int(size[0]), int(size[1]))
        x0, y0, x1, y1 = x, y, min(x + w, lv.width), min(y + h, lv.height)
        if x1 <= x0 or y1 <= y0:
            return np.zeros((h, w, 3), np.uint8)
        c0, c1 = x0 // lv.tile_w, (x1 - 1) // lv.tile_w + 1
        r0, r1 = y0 // lv.tile_h, (y1 - 1) // lv.tile_h + 1
        jobs = [(r, c) for r in range(r0, r1) for c in range(c0, c1)
                if lv.counts[r * lv.cols + c] > 0]
        whole = (x1, y1) == (x + w, y + h) and len(jobs) == (r1 - r0) * (c1 - c0)
        out = np.empty((h, w, 3), np.uint8) if whole else np.zeros((h, w, 3), np.uint8)

        def paste(rc: tuple[int, int]) -> bool:
            r, c = rc
            tile = self._tile(level, lv, r * lv.cols + c)
            if tile is None:
                return False
            tx, ty = c * lv.tile_w, r * lv.tile_h
            ax, ay = max(x0, tx), max(y0, ty)
            bx, by = min(x1, tx + lv.tile_w), min(y1, ty + lv.tile_h)
            out[ay - y:by - y, ax - x:bx - x] = tile[ay - ty:by - ty, ax - tx:bx - tx]
            return True

        if len(jobs) >= PARALLEL_MIN_TILES and DECODE_THREADS > 1:
            ok = all(_decode_pool().map(paste, jobs))
        else:
            ok = all(paste(j) for j in jobs)     # a loop over tiles, not patches
        return out if ok else None
