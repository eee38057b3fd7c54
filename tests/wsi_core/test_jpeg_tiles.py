"""wsi_core.jpeg_tiles: direct JPEG tile reads give OpenSlide's pixels, or go to OpenSlide."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest
import tifffile

from vis_utils.tiff import write_pyramidal_tiff
from wsi_core import jpeg_tiles
from wsi_core.slide import open_slide

TILE = 256


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour noise (JPEG-friendly, every tile different)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generic tiled TIFF, JPEG YCbCr, 1500 x 1000 px, levels with downsample 1, 2, 4 (750 x 500,
    375 x 250), partial tiles at the right and bottom edges of every level."""
    path = tmp_path_factory.mktemp("jt") / "pyramid.tiff"
    write_pyramidal_tiff(path, _image(1000, 1500), size=(1500, 1000), mpp=(0.5, 0.5),
                         tile_size=TILE, compression="jpeg", quality=80, min_size=400)
    return path


def _regions(dims: list[tuple[int, int]], downsamples: list[float], n: int, seed: int):
    """Random reads: inside, across tiles, over the right/bottom edge, wholly outside, negative,
    and (a third of them) at level-0 locations off the level's pixel grid."""
    rng = np.random.default_rng(seed)
    for level, ((w, h), d) in enumerate(zip(dims, downsamples)):
        for i in range(n):
            sw, sh = int(rng.integers(1, 700)), int(rng.integers(1, 700))
            x, y = int(rng.integers(-60, w + 40)), int(rng.integers(-60, h + 40))
            loc = (int(x * d), int(y * d))
            if i % 3 == 2 and d > 1:
                loc = (loc[0] + 1, loc[1])
            yield loc, level, (sw, sh)


def _assert_same_reads(path: Path, n: int = 25, seed: int = 0) -> list[int]:
    with open_slide(path) as fast, open_slide(path, direct_jpeg=False) as ref:
        assert ref.direct_levels == []
        osr = openslide.OpenSlide(str(path))
        for loc, level, size in _regions(fast.level_dimensions, list(osr.level_downsamples), n, seed):
            got = fast.read_region(loc, level, size)
            want = ref.read_region(loc, level, size)
            assert got.shape == (size[1], size[0], 3) and got.dtype == np.uint8
            np.testing.assert_array_equal(got, want, err_msg=f"{loc} level {level} {size}")
        osr.close()
        return fast.direct_levels


def test_direct_reads_equal_openslide(pyramid: Path) -> None:
    with open_slide(pyramid) as s:
        assert s.properties["openslide.vendor"] == "generic-tiff"
        assert [d for d, _ in s.level_downsamples] == [1.0, 2.0, 4.0]
    # every level was checked against OpenSlide and then read directly
    assert _assert_same_reads(pyramid) == [0, 1, 2]


def test_reads_of_many_tiles_in_threads_and_in_one(pyramid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_slide(pyramid, direct_jpeg=False) as ref:
        want = ref.read_region((100, 50), 0, (1400, 900))          # 6 x 5 tiles
    for threads in (1, 2):
        monkeypatch.setattr(jpeg_tiles, "DECODE_THREADS", threads)
        with open_slide(pyramid) as s:
            np.testing.assert_array_equal(s.read_region((100, 50), 0, (1400, 900)), want)
            assert s.direct_levels == [0]


def test_one_bounded_tile_cache_for_every_slide(pyramid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = jpeg_tiles._cache
    base = len(cache)
    with open_slide(pyramid) as a, open_slide(pyramid) as b:
        a.read_region((0, 0), 0, (512, 256))
        b.read_region((0, 0), 0, (256, 256))
        assert len(cache) == base + 3                    # tiles of both slides, kept apart
        b.close()
        assert len(cache) == base + 2                    # a closed slide's tiles are dropped
        monkeypatch.setattr(jpeg_tiles, "TILE_CACHE_BYTES", cache.nbytes + TILE * TILE * 3)
        a.read_region((0, 256), 0, (1536, 256))          # six more tiles: the oldest go
        assert cache.nbytes <= jpeg_tiles.TILE_CACHE_BYTES
    assert len(cache) <= base                             # and so are the last slide's


def test_empty_tiles_read_as_openslide_reads_them(tmp_path: Path) -> None:
    """Tiles stored empty (TileByteCounts 0) are transparent in OpenSlide: (0, 0, 0) in RGB."""
    path = tmp_path / "sparse.tiff"
    grid = np.zeros((4, 6), bool)
    grid[1:3, 2:5] = True
    img = _image(1024, 1536, seed=1)
    keep = np.kron(grid, np.ones((TILE, TILE), bool))
    img[~keep] = 255
    write_pyramidal_tiff(path, img, size=(1536, 1024), mpp=None, tile_size=TILE, compression="jpeg",
                         quality=80, min_size=2000, content_tiles=grid)
    with tifffile.TiffFile(path) as tf:
        assert (np.asarray(tf.pages[0].databytecounts) == 0).sum() == (~grid).sum()
    assert _assert_same_reads(path, n=40, seed=3) == [0]
    with open_slide(path) as s:
        assert not s.read_region((0, 0), 0, (TILE, TILE)).any()


def test_a_level_that_decodes_differently_is_read_by_openslide(
        pyramid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decode = jpeg_tiles.JpegTileReader._decode

    def off_by_one(self, lv, index):  # noqa: ANN001 - a decoder with another colour convention
        tile = decode(self, lv, index)
        return None if tile is None else tile ^ 1

    monkeypatch.setattr(jpeg_tiles.JpegTileReader, "_decode", off_by_one)
    assert _assert_same_reads(pyramid, n=10, seed=5) == []


def test_a_tile_opencv_cannot_decode_goes_to_openslide(pyramid: Path, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.tiff"
    shutil.copy(pyramid, path)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        counts = np.asarray(page.databytecounts)
        bad = int(np.argmin(counts))             # not the largest tile, which the level check decodes
        good = int(np.argmax(counts))
        offset = int(page.dataoffsets[bad])
        cols = -(-page.imagewidth // TILE)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00\x00")                    # no JPEG SOI marker any more
    at = lambda i: ((i % cols) * TILE + 10, (i // cols) * TILE + 10)    # noqa: E731
    with open_slide(path) as s, open_slide(path, direct_jpeg=False) as ref:
        reader = s._tiles
        assert reader is not None
        np.testing.assert_array_equal(s.read_region(at(good), 0, (64, 64)),
                                      ref.read_region(at(good), 0, (64, 64)))
        assert s.direct_levels == [0]
        assert reader.read(at(bad), 0, (64, 64)) is None        # that tile: OpenSlide's to read
        with pytest.raises(openslide.OpenSlideError):
            s.read_region(at(bad), 0, (64, 64))


def test_formats_without_jpeg_tiff_tiles_are_read_by_openslide(tmp_path: Path) -> None:
    path = tmp_path / "deflate.tiff"
    write_pyramidal_tiff(path, _image(512, 512), size=(512, 512), mpp=None, tile_size=TILE,
                         compression="deflate", min_size=1000)
    with open_slide(path) as s:
        assert s._tiles is None and s.direct_levels == []
        assert s.read_region((0, 0), 0, (8, 8)).shape == (8, 8, 3)


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs",                     # Aperio: RGB JPEG, JPEGTables
                                  "reconstructed/C3L-01663-21.tiff"])            # generic: YCbCr 4:2:0
def test_real_slides_read_directly_with_openslides_pixels(slides_dir: Path, name: str) -> None:
    assert 0 in _assert_same_reads(slides_dir / name, n=20, seed=7)


@pytest.mark.parametrize("name", ["tcga-cr-7395-01a-01-ts1.svs",                # Aperio JPEG 2000
                                  "slideio_test3-DAPI-2-387.ndpi",              # Hamamatsu
                                  "dicom_cmu-1-small-region"])                  # DICOM
def test_other_real_formats_stay_with_openslide(slides_dir: Path, name: str) -> None:
    with open_slide(slides_dir / name) as s:
        s.read_region((0, 0), 0, (300, 300))
        assert s.direct_levels == []


def _read_in_child(path: str, queue) -> None:  # noqa: ANN001 - a multiprocessing.Queue
    with open_slide(path) as s:
        queue.put(s.read_region((100, 50), 0, (1400, 900)).sum())


def test_a_forked_worker_reads_with_its_own_threads(pyramid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DataLoader workers are forked: the parent's decode threads do not exist in the child."""
    import multiprocessing

    monkeypatch.setattr(jpeg_tiles, "DECODE_THREADS", 2)
    with open_slide(pyramid) as s:
        want = int(s.read_region((100, 50), 0, (1400, 900)).sum())   # the parent's pool is running
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_read_in_child, args=(str(pyramid), queue))
        child.start()
        got = int(queue.get(timeout=60))
        child.join(timeout=60)
    assert child.exitcode == 0 and got == want
