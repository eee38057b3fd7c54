"""Pyramidal tiled TIFF writing with bounded memory (OpenSlide's generic-tiff layout).

Layout (what OpenSlide's *generic-tiff* driver, QuPath and libvips read):

* one tiled IFD (page) per level, level 0 first, each following level half the size of the
  previous one (``floor``: ``w // 2, h // 2``, every pixel the 2x2 box mean, ``cv2.INTER_AREA``)
  until the longest side is ``<= min_size``; ``NewSubfileType`` 1 on the reduced levels. No
  SubIFDs (OpenSlide does not read SubIFD pyramids).
* 256x256 tiles (``tile_size``), edge tiles padded by repeating the last row/column.
* ``compression='jpeg'``: baseline JPEG tiles (OpenCV / libjpeg-turbo, 4:4:4, no chroma
  subsampling, so sharp colour-map edges keep their colours) tagged ``Photometric YCbCr`` with
  ``YCbCrSubSampling (1, 1)`` - the colour space the JPEG data really is in, so OpenSlide converts
  it back to RGB correctly. Grey images: ``MinIsBlack`` JPEG.
  ``compression='deflate'`` (alias ``'zlib'``): lossless Adobe deflate with the horizontal
  differencing predictor. ``compression='none'``: raw.
* ``XResolution``/``YResolution`` in px per centimeter (``1e4 / mpp``, per level
  ``1e4 / (mpp * level downsample)``) so OpenSlide reports ``openslide.mpp-x/y``.
* BigTIFF when the uncompressed pyramid could pass 4 GiB.
* Sparse images (``content_box`` and/or ``content_tiles``): tiles of any level that hold no
  content - wholly outside the content box, or (``content_tiles``) none of the level-0 tiles under
  them marked - are not encoded but written *empty* - ``TileOffsets`` 0 and ``TileByteCounts`` 0 -
  which OpenSlide (>= 4) reads as transparent (``read_region`` alpha 0) and tifffile as its fill
  value. A band without content may be given as ``None`` (it is never encoded; the pyramid's
  partly covered tiles see ``fill`` there).

The file is written by a small streaming TIFF writer here (not ``tifffile.TiffWriter``: tifffile
needs the ``imagecodecs`` package for JPEG even for pre-encoded tiles, and writes one page at a
time). Tiles of every level go into the file as soon as they are complete - level 0 is produced
band by band from a callable and each band is downsampled into the next level's row buffer - and
the IFDs (tile offsets) are written at the end. Tiles are encoded in ``ENCODE_THREADS`` threads
(``cv2.imencode`` / ``zlib.compress`` release the GIL) while the caller renders the next band; they
go into the file in submission order, so the bytes do not depend on thread timing. Memory: one
band of level 0, fewer than ``2 * tile_size`` pending rows per level and at most
``MAX_QUEUED_TILES`` queued tiles, whatever the image size. Written atomically
(:func:`wsi_core.io.atomic_path`).

(Over 400 lines for one job: the streaming TIFF writer, kept in one module so the tag layout, the
level buffers and the empty-tile rules are read together.)
"""
from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Union

import cv2
import numpy as np

from wsi_core.errors import ConfigError
from wsi_core.io import atomic_path

__all__ = ["TileSource", "write_pyramidal_tiff", "pyramid_sizes", "check_raster_size",
           "RASTER_MAX_SIDE", "tile_grid_levels"]

#: A band callable ``render_band(y0, y1) -> (y1 - y0, W, C)`` uint8 (C = 3, or 1 / 2-D for grey),
#: an iterable of such bands in top-to-bottom order (any heights, summing to H), or one array.
#: With a ``content_box`` a callable may return None for a band that lies wholly outside it.
TileSource = Union[Callable[[int, int], np.ndarray], Iterable[np.ndarray], np.ndarray]

COMPRESSIONS = {"jpeg": 7, "deflate": 8, "zlib": 8, "none": 1}
RASTER_MAX_SIDE = 65535     # px per side for a single PNG/JPEG heatmap (see check_raster_size)
ENCODE_THREADS = max(1, min(8, os.cpu_count() or 1))
MAX_QUEUED_TILES = 256           # tiles queued for the encoder threads (256 px RGB: 192 KiB each)
_BIGTIFF_LIMIT = 2**32 - 2**25


def check_raster_size(w: int, h: int, ext: str) -> None:
    """Refuse a single-image heatmap too large for PNG/JPEG.

    JPEG cannot store more than 65,535 px per side. PNG allows 2^31 - 1, but common decoders
    (browsers, PIL's default bomb limit, libpng builds with user limits) fail long before; we use
    the same practical limit, 65,535 px per side, for both. TIFF output has no such limit.

    Args:
        w, h: image width and height, px. ext: output extension (``png``, ``.jpg``, ...).

    Raises:
        ConfigError: ``"a level-0 PNG of 100000x80000 px exceeds PNG/JPEG limits (JPEG 65,535 px
            per side; PNG decoders ~2^31 px); use save_ext: tiff"``.
    """
    e = str(ext).lower().lstrip(".")
    if e in {"png", "jpg", "jpeg"} and max(int(w), int(h)) > RASTER_MAX_SIDE:
        kind = "PNG" if e == "png" else "JPEG"
        raise ConfigError(
            f"a level-0 {kind} of {int(w)}x{int(h)} px exceeds PNG/JPEG limits (JPEG 65,535 px "
            "per side; PNG decoders ~2^31 px); use save_ext: tiff"
        )


def pyramid_sizes(size: tuple[int, int], *, min_size: int = 1024) -> list[tuple[int, int]]:
    """``(w, h)`` px of every level: level 0 = ``size``, then ``(w // 2, h // 2)`` while the
    longest side of the last level is ``> min_size`` (and both sides stay >= 1)."""
    w, h = (int(v) for v in size)
    out = [(w, h)]
    while max(w, h) > max(int(min_size), 1) and min(w, h) >= 2:
        w, h = w // 2, h // 2
        out.append((w, h))
    return out


# --------------------------------------------------------------------------- tile encoding
def _encoder(compression: str, quality: int, samples: int) -> Callable[[np.ndarray], bytes]:
    if compression == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]

        def jpeg(tile: np.ndarray) -> bytes:
            img = cv2.cvtColor(tile, cv2.COLOR_RGB2BGR) if samples == 3 else tile
            ok, buf = cv2.imencode(".jpg", img, params)
            if not ok:  # pragma: no cover - OpenCV failure
                raise RuntimeError("OpenCV could not JPEG-encode a tile")
            return buf.tobytes()
        return jpeg
    if compression in ("deflate", "zlib"):
        def deflate(tile: np.ndarray) -> bytes:
            d = tile.copy()
            d[:, 1:] -= tile[:, :-1]          # TIFF predictor 2 (horizontal differencing)
            return zlib.compress(d.tobytes(), 6)
        return deflate
    return lambda tile: tile.tobytes()


def _tile_row(rows: np.ndarray, tile: int, width: int,
              keep: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, tile)`` for the tiles ``keep`` (None: all) of ``(tile, width, C)`` rows: ``(tile,
    tile, C)`` copies, the last one padded by edge repetition."""
    for k in (range(-(-width // tile)) if keep is None else keep):
        x = int(k) * tile
        t = rows[:, x:x + tile]
        if t.shape[1] < tile:
            t = np.pad(t, ((0, 0), (0, tile - t.shape[1]), (0, 0)), mode="edge")
        yield int(k), np.ascontiguousarray(t)


class _Level:
    """Row buffer of one pyramid level: complete tile rows are encoded and written at once."""

    def __init__(self, size: tuple[int, int], samples: int, tile: int,
                 box: tuple[int, int, int, int] | None = None, grid: np.ndarray | None = None) -> None:
        self.w, self.h = size
        self.tile = tile
        self.ntx = -(-self.w // tile)
        self.nty = -(-self.h // tile)
        self.box = box             # content (x0, y0, x1, y1) px of this level; None: all content
        self.grid = grid           # (nty, ntx) bool: tiles with content; None: all content
        self.offsets = np.zeros(self.ntx * self.nty, dtype=np.uint64)
        self.counts = np.zeros(self.ntx * self.nty, dtype=np.uint64)
        self.pending = np.empty((0, self.w, samples), dtype=np.uint8)
        self.rows_in = 0           # rows received so far
        self.tiles_done = 0

    def push(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """Add rows; yield each complete ``(tile, w, C)`` tile row (the last one padded)."""
        rows = rows[:, :self.w][: self.h - self.rows_in]
        self.rows_in += len(rows)
        self.pending = np.concatenate((self.pending, rows)) if len(self.pending) else rows
        while len(self.pending) >= self.tile or (self.rows_in == self.h and len(self.pending)):
            chunk, self.pending = self.pending[:self.tile], self.pending[self.tile:]
            if len(self.pending) < self.tile:   # own the leftover rows, release the band
                self.pending = self.pending.copy()
            if len(chunk) < self.tile:
                chunk = np.pad(chunk, ((0, self.tile - len(chunk)), (0, 0), (0, 0)), mode="edge")
            yield chunk

    def content_tiles(self, tile_row: int) -> np.ndarray | None:
        """Indices of the tiles of ``tile_row`` that touch the content box and are marked in the
        content grid (None: every tile)."""
        if self.box is None and self.grid is None:
            return None
        keep = np.ones(self.ntx, bool) if self.grid is None else self.grid[tile_row].copy()
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            t = self.tile
            if tile_row * t >= y1 or (tile_row + 1) * t <= y0:
                return np.zeros(0, np.int64)
            keep[:max(0, x0 // t)] = False
            keep[max(0, -(-x1 // t)):] = False
        return np.flatnonzero(keep)


def tile_grid_levels(grid: np.ndarray, tiles: list[tuple[int, int]]) -> list[np.ndarray]:
    """The content grid of every pyramid level from level 0's.

    Args:
        grid: ``(nty, ntx)`` bool, level-0 tiles that hold content.
        tiles: ``(ntx, nty)`` tile counts of every level, level 0 first (each level halves the
            previous one, so a tile of level k covers ``2 x 2`` tiles of level k - 1).

    Returns:
        One ``(nty_k, ntx_k)`` bool grid per level: a tile holds content when any tile under it
        does.
    """
    out = [np.asarray(grid, bool)]
    for ntx, nty in tiles[1:]:
        g = out[-1]
        g = np.pad(g, ((0, g.shape[0] % 2), (0, g.shape[1] % 2)))
        g = g.reshape(g.shape[0] // 2, 2, g.shape[1] // 2, 2).any(axis=(1, 3))
        out.append(np.ascontiguousarray(g[:nty, :ntx]))
    return out


def level_box(box: tuple[int, int, int, int], level: int) -> tuple[int, int, int, int]:
    """The level-0 px ``box`` (x0, y0, x1, y1) at pyramid level ``level`` (each level halves the
    previous, 2x2 box means): every pixel that sees any pixel of the box (floor / ceil)."""
    f = 1 << level
    x0, y0, x1, y1 = (int(v) for v in box)
    return x0 // f, y0 // f, -(-x1 // f), -(-y1 // f)


class _Downsampler:
    """2x2 box means of a stream of rows (keeps an odd row for the next call)."""

    def __init__(self, out_w: int) -> None:
        self.out_w = out_w
        self.carry: np.ndarray | None = None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.carry is not None:
            rows = np.concatenate((self.carry, rows))
        n = len(rows) // 2 * 2
        self.carry = rows[n:].copy() if n < len(rows) else None
        if n == 0:
            return rows[:0, :self.out_w]
        out = cv2.resize(rows[:n, :2 * self.out_w], (self.out_w, n // 2),
                         interpolation=cv2.INTER_AREA)
        return out.reshape(n // 2, self.out_w, -1)


class _TiffFile:
    """Minimal streaming TIFF / BigTIFF writer: tile data first, IFDs at the end."""

    def __init__(self, fh: BinaryIO, bigtiff: bool) -> None:
        self.fh, self.big = fh, bigtiff
        self.off_fmt = "Q" if bigtiff else "I"
        fh.write(b"II+\x00" + struct.pack("<HHQ", 8, 0, 0) if bigtiff else b"II*\x00" + b"\0" * 4)

    def append(self, data: bytes) -> tuple[int, int]:
        pos = self.fh.seek(0, os.SEEK_END)
        if pos % 2:
            self.fh.write(b"\0")
            pos += 1
        self.fh.write(data)
        return pos, len(data)

    def write_ifds(self, ifds: list[list[tuple[int, int, object]]]) -> None:
        """Write IFDs (tag lists of ``(code, type, values)``) chained in order."""
        link = 8 if self.big else 4      # where the pointer to the next IFD goes
        for tags in ifds:
            pos = self._write_ifd(sorted(tags, key=lambda t: t[0]))
            self.fh.seek(link)
            self.fh.write(struct.pack("<" + self.off_fmt, pos))
            link = pos + (8 + 20 * len(tags) if self.big else 2 + 12 * len(tags))

    def _write_ifd(self, tags: list[tuple[int, int, object]]) -> int:
        entry_fmt, slot = ("<HHQ", 8) if self.big else ("<HHI", 4)
        entries = []
        for code, typ, values in tags:
            data, count = _pack_values(typ, values)
            if len(data) <= slot:
                entries.append(struct.pack(entry_fmt, code, typ, count) + data.ljust(slot, b"\0"))
            else:
                pos, _ = self.append(data)
                entries.append(struct.pack(entry_fmt, code, typ, count)
                               + struct.pack("<" + self.off_fmt, pos))
        head = struct.pack("<Q", len(tags)) if self.big else struct.pack("<H", len(tags))
        pos, _ = self.append(head + b"".join(entries) + b"\0" * slot)
        return pos


_TYPES = {2: "s", 3: "H", 4: "I", 5: "I", 16: "Q"}   # ASCII, SHORT, LONG, RATIONAL, LONG8


def _pack_values(typ: int, values: object) -> tuple[bytes, int]:
    if typ == 2:
        data = str(values).encode("ascii", "replace") + b"\0"
        return data, len(data)
    arr = np.atleast_1d(np.asarray(values, dtype=np.uint64))
    dt = {3: "<u2", 4: "<u4", 5: "<u4", 16: "<u8"}[typ]
    return arr.astype(dt).tobytes(), (len(arr) // 2 if typ == 5 else len(arr))


def _rational(v: float) -> list[int]:
    """``[numerator, denominator]`` uint32 closest to ``v`` (> 0)."""
    max_den = max(1, min(2**32 - 1, int((2**32 - 1) / max(v, 1))))
    frac = Fraction(float(v)).limit_denominator(max_den)
    return [max(1, min(2**32 - 1, frac.numerator)), max(1, frac.denominator)]


def _page_tags(level: _Level, index: int, *, samples: int, ctag: int, photometric: int,
               res: tuple[float, float] | None, description: str, big: bool) -> list:
    tags: list[tuple[int, int, object]] = [
        (254, 4, 0 if index == 0 else 1), (256, 4, level.w), (257, 4, level.h),
        (258, 3, [8] * samples), (259, 3, ctag), (262, 3, photometric), (277, 3, samples),
        (284, 3, 1), (322, 4, level.tile), (323, 4, level.tile),
        (324, 16 if big else 4, level.offsets), (325, 16 if big else 4, level.counts),
    ]
    if index == 0:
        tags += [(270, 2, description or "wsi-heatmaps"), (305, 2, "wsi-heatmaps vis_utils.tiff")]
    if ctag == 8:
        tags.append((317, 3, 2))
    if photometric == 6:
        tags.append((530, 3, [1, 1]))
    if res is not None:
        tags += [(282, 5, _rational(res[0])), (283, 5, _rational(res[1])), (296, 3, 3)]
    return tags


def _bands(tiles: TileSource, w: int, h: int, band_rows: int) -> Iterator[np.ndarray]:
    if isinstance(tiles, np.ndarray):
        yield tiles
    elif callable(tiles):
        for y0 in range(0, h, band_rows):
            yield tiles(y0, min(h, y0 + band_rows))
    else:
        yield from tiles


def _filled(bands: Iterator[np.ndarray | None], w: int, h: int, box: tuple[int, int, int, int] | None,
            grid: np.ndarray | None, tile: int, fill: int | tuple[int, ...], band_rows: int
            ) -> Iterator[np.ndarray]:
    """Bands with each None replaced by ``fill`` rows (allowed only where no content is: wholly
    outside ``box``, over level-0 tile rows without a marked tile of ``grid``)."""
    pixel = np.atleast_1d(np.asarray(fill, dtype=np.uint8))
    y = 0
    for band in bands:
        if band is None:
            rows = min(band_rows, h - y)
            outside_box = box is not None and not (box[1] < y + rows and y < box[3])
            no_tiles = grid is not None and not grid[y // tile:-(-(y + rows) // tile)].any()
            if not (outside_box or no_tiles):
                what = f"overlap the content box {tuple(box)}" if grid is None else "hold content tiles"
                raise ValueError(f"write_pyramidal_tiff: band rows {y}-{y + rows} {what} but were given as None")
            band = np.empty((rows, w, len(pixel)), np.uint8)
            band[:] = pixel
        y += len(band)
        yield band
        del band        # do not hold this band while the next one is rendered


def _as_band(band: np.ndarray, w: int, samples: int | None) -> np.ndarray:
    band = np.asarray(band)
    if band.ndim == 2:
        band = band[:, :, None]
    ok = band.dtype == np.uint8 and band.ndim == 3 and band.shape[1] == w and (
        band.shape[2] in (1, 3) if samples is None else band.shape[2] == samples)
    if not ok:
        raise ValueError(f"write_pyramidal_tiff: band {band.shape} {band.dtype} is not "
                         f"(rows, {w}, {samples or '1|3'}) uint8")
    return band


def write_pyramidal_tiff(path: str | os.PathLike[str], tiles: TileSource, *,
                         size: tuple[int, int], mpp: tuple[float, float] | None,
                         tile_size: int = 256, compression: str = "jpeg", quality: int = 90,
                         description: str = "", min_size: int = 1024, band_rows: int = 1024,
                         bigtiff: bool | None = None,
                         content_box: tuple[int, int, int, int] | None = None,
                         content_tiles: np.ndarray | None = None,
                         fill: int | tuple[int, int, int] = (255, 255, 255), level_step: int = 1) -> Path:
    """Write a tiled pyramidal TIFF from bands of level 0 (see the module docstring).

    Args:
        path: output ``.tif``/``.tiff`` path (written atomically).
        tiles: a :data:`TileSource` of level-0 pixels: ``render_band(y0, y1)`` called for rows
            ``[0, band_rows), [band_rows, 2 * band_rows), ...``, or an iterable of bands
            ``(rows, W, C)`` top to bottom, or one ``(H, W, C)`` array. uint8, C = 3 (RGB) or 1
            (grey, also as 2-D bands).
        size: level-0 ``(W, H)`` px.
        mpp: level-0 ``(x, y)`` µm/px for the resolution tags, or None (no tags).
        tile_size: tile side, px (multiple of 16).
        compression: ``'jpeg'`` (lossy, ``quality`` 1-100), ``'deflate'``/``'zlib'`` (lossless)
            or ``'none'``.
        description: ImageDescription of level 0 (do not start it with ``Aperio``).
        min_size: stop halving when the longest side is ``<= min_size`` px.
        band_rows: rows per ``render_band`` call.
        bigtiff: force BigTIFF on/off; None = when the uncompressed pyramid may pass 4 GiB.
        content_box: level-0 px ``(x0, y0, x1, y1)`` (end exclusive) of the image's content, or
            None (all of it). Tiles of every level lying wholly outside it are written empty
            (offset 0, byte count 0; OpenSlide >= 4: transparent). The bands' pixels outside the
            box must be ``fill`` (they are seen by partly covered tiles).
        content_tiles: ``(ceil(H / tile_size), ceil(W / tile_size))`` bool, the level-0 tiles
            that hold content, or None (all). Unmarked tiles are written empty (OpenSlide >= 4:
            transparent); a tile of a coarser level is written when any level-0 tile under it is
            marked (:func:`tile_grid_levels`), and sees the bands' pixels of unmarked tiles, which
            should be ``fill``. Combines with ``content_box`` (a tile must pass both).
        fill: the pixel of a band given as None (needs ``content_box`` or ``content_tiles``): an
            RGB triple (default white), or one int for a grey image.
        level_step: write every ``level_step``-th halving only (2: downsamples 1, 4, 16, ...); the
            levels between are computed (each written level is still the exact chain of 2x2 box
            means) but not written.

    Returns:
        The written path.

    Raises:
        ConfigError: unknown ``compression``, bad ``tile_size`` / ``size`` / ``quality``.
        ValueError: a band of the wrong shape/dtype, the bands do not add up to ``H`` rows, a
            None band without ``content_box`` / ``content_tiles`` or over content, or a
            ``content_tiles`` grid of the wrong shape.
        WsiHeatmapsError: the directory is not writable or the disk is full (atomic_path).
    """
    comp = str(compression).lower()
    if comp not in COMPRESSIONS:
        raise ConfigError(f"unknown TIFF compression {compression!r}; use one of "
                          f"{sorted(COMPRESSIONS)}")
    w, h = (int(v) for v in size)
    level_step = int(level_step)
    if w < 1 or h < 1 or tile_size < 16 or tile_size % 16 or not 1 <= int(quality) <= 100 or level_step < 1:
        raise ConfigError(f"write_pyramidal_tiff {path}: size {w}x{h}, tile_size {tile_size} "
                          f"(multiple of 16), quality {quality} (1-100) and level_step {level_step} (>= 1) "
                          "must be valid")
    sizes = pyramid_sizes((w, h), min_size=min_size)
    grids: list[np.ndarray | None] = [None] * len(sizes)
    if content_tiles is not None:
        shape = (-(-h // tile_size), -(-w // tile_size))
        if np.shape(content_tiles) != shape:
            raise ValueError(f"write_pyramidal_tiff {path}: content_tiles {np.shape(content_tiles)} is not the "
                             f"{shape} level-0 tile grid")
        grids = tile_grid_levels(content_tiles, [(-(-sw // tile_size), -(-sh // tile_size)) for sw, sh in sizes])
    band_iter = _bands(tiles, w, h, max(1, int(band_rows)))
    if content_box is not None or content_tiles is not None:
        band_iter = _filled(band_iter, w, h, content_box, grids[0], tile_size, fill, max(1, int(band_rows)))
    first = _as_band(next(band_iter, np.zeros((0, w, 3), np.uint8)), w, None)
    samples = first.shape[2]
    levels = [_Level(s, samples, tile_size, None if content_box is None else level_box(content_box, i), grids[i])
              for i, s in enumerate(sizes)]
    downs = [_Downsampler(s[0]) for s in sizes[1:]]
    encode = _encoder(comp, quality, samples)
    if bigtiff is None:
        bigtiff = w * h * samples * 4 // 3 + 2**20 > _BIGTIFF_LIMIT
    with atomic_path(path) as tmp, open(tmp, "wb") as fh, \
            ThreadPoolExecutor(ENCODE_THREADS) as pool:
        out = _TiffFile(fh, bool(bigtiff))

        pending: deque = deque()       # (level, tile index, future) in submission = file order

        def drain(keep_at_most: int) -> None:
            """Write finished tiles in submission order (the file's layout does not depend on
            which thread finishes first); wait while more than ``keep_at_most`` are queued."""
            while pending and (len(pending) > keep_at_most or pending[0][2].done()):
                lv, k, fut = pending.popleft()
                lv.offsets[k], lv.counts[k] = out.append(fut.result())

        def feed(i: int, rows: np.ndarray) -> None:
            lv = levels[i]
            if i % level_step:          # a level between written ones: only passed down
                if i + 1 < len(levels) and len(rows):
                    feed(i + 1, downs[i](rows))
                return
            for chunk in lv.push(rows):
                base = lv.tiles_done
                keep = lv.content_tiles(base // lv.ntx)   # the other tiles stay empty: offset 0, count 0
                for k, tile in _tile_row(chunk, tile_size, lv.w, keep):
                    pending.append((lv, base + k, pool.submit(encode, tile)))
                    drain(MAX_QUEUED_TILES)
                lv.tiles_done += lv.ntx
            if i + 1 < len(levels) and len(rows):
                feed(i + 1, downs[i](rows))

        rows_seen = 0
        band: np.ndarray | None = first
        del first
        while band is not None:
            band = _as_band(band, w, samples)
            rows_seen += len(band)
            feed(0, band)
            band = None                     # free this band before the next one is rendered
            band = next(band_iter, None)
        drain(0)
        written = [(i, lv) for i, lv in enumerate(levels) if i % level_step == 0]
        if rows_seen != h or any(lv.tiles_done != lv.ntx * lv.nty for _, lv in written):
            raise ValueError(f"write_pyramidal_tiff {path}: the bands gave {rows_seen} rows, "
                             f"expected {h}")
        photometric = (6 if comp == "jpeg" else 2) if samples == 3 else 1
        ifds = [
            _page_tags(lv, i, samples=samples, ctag=COMPRESSIONS[comp], photometric=photometric,
                       res=None if mpp is None else (1e4 / (mpp[0] * w / lv.w),
                                                     1e4 / (mpp[1] * h / lv.h)),
                       description=description, big=bool(bigtiff))
            for i, lv in written
        ]
        out.write_ifds(ifds)
    return Path(path)
