"""Benchmark: ``Slide.read_region`` with direct JPEG tile decoding (``wsi_core/jpeg_tiles.py``)
against OpenSlide's own read, on the JPEG-tiled slides of ``../shared/slides`` (and any slide
given with ``--slide``).

For each slide and each way: Mpx/s of level-0 reads of 2048 x 2048 px regions at whole tile
positions spread over the slide (each region read once, with a fresh Slide and so a cold tile
cache; the median of three such passes),
in one thread and in one reading thread per core (each thread its own regions; ``Slide`` is
shared, as in the TIFF writer and the viewer), the pixels checked identical, beside the measured
ceiling: ``cv2.imdecode`` of a tissue-like 4:2:0 q80 JPEG in as many threads
(``hw_limits.jpeg_mpxs``). A direct read decodes the tiles of one large region in
``DECODE_THREADS`` threads itself, so its one-reading-thread figure stands beside the ceiling of
that many threads. Slide tiles with background decode faster than the tissue-like tile, so a
direct read can pass the ceiling.

Run from the repository root: ``python benchmarks/bench_slide_read.py [--slide PATH ...]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hw_limits import jpeg_mpxs, load_line, rate_line, usable_cores  # noqa: E402
from wsi_core.jpeg_tiles import DECODE_THREADS  # noqa: E402
from wsi_core.slide import open_slide  # noqa: E402

SHARED = REPO.parent / "shared" / "slides"
DEFAULT = [SHARED / "CMU-1-Small-Region.svs", SHARED / "reconstructed" / "C3L-01663-21.tiff"]
REGION = 2048


def _locations(dims: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """Up to ``n`` level-0 locations on a 256-px lattice, spread over the slide."""
    w, h = dims
    xs = np.linspace(0, max(0, w - REGION), max(1, int(np.sqrt(n))) + 1).astype(int) // 256 * 256
    ys = np.linspace(0, max(0, h - REGION), max(1, int(np.sqrt(n))) + 1).astype(int) // 256 * 256
    return [(int(x), int(y)) for y in np.unique(ys) for x in np.unique(xs)][:n]


def _rates(path: Path, direct: bool, locs: list[tuple[int, int]], threads: int) -> tuple[float, list]:
    """(Mpx/s, the regions read) for ``threads`` threads splitting ``locs``, one fresh Slide."""
    with open_slide(path, direct_jpeg=direct) as s:
        size = (min(REGION, s.dimensions[0]), min(REGION, s.dimensions[1]))
        s.read_region((0, 0), 0, (16, 16))          # the level check (direct) / OpenSlide's set-up
        out: list = [None] * len(locs)

        def work(k: int) -> None:
            for i in range(k, len(locs), threads):
                out[i] = s.read_region(locs[i], 0, size)

        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
        dt = time.perf_counter() - t
        used = s.direct_levels
    if direct and 0 not in used:
        print(f"  {path.name}: level 0 not read directly (OpenSlide's pixels differ or no JPEG tiles)")
    return len(locs) * size[0] * size[1] / dt / 1e6, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slide", type=Path, action="append", help="a slide (repeatable); default: the shared JPEG slides")
    ap.add_argument("--regions", type=int, default=16, help="regions per slide (default 16)")
    args = ap.parse_args()
    slides = [p for p in (args.slide or DEFAULT) if p.exists()]
    if not slides:
        sys.exit("no slide found: pass --slide PATH (the default slides are in ../shared/slides)")
    cores = usable_cores()
    print(load_line())
    for path in slides:
        with open_slide(path) as s:
            locs = _locations(s.dimensions, args.regions)
            vendor = s.properties.get("openslide.vendor")
        print(f"{path.name} ({vendor}), {len(locs)} regions of up to {REGION}x{REGION} px at level 0:")
        for threads in sorted({1, cores}):
            ceiling = jpeg_mpxs("decode", threads=threads)
            runs = {}
            for direct in (False, True):
                rates, regions = [], None
                for _ in range(3):
                    r, regions = _rates(path, direct, locs, threads)
                    rates.append(r)
                runs[direct] = (statistics.median(rates), regions)
            same = all(np.array_equal(a, b) for a, b in zip(runs[False][1], runs[True][1]))
            name = f"{threads} reading thread{'s' if threads > 1 else ''}"
            print("  " + rate_line(f"OpenSlide, {name}:", runs[False][0], "Mpx/s", ceiling,
                                   f"measured {threads}-thread cv2.imdecode"))
            dthreads = max(threads, min(DECODE_THREADS, cores))     # a read decodes in threads itself
            print("  " + rate_line(f"direct, {name}:", runs[True][0], "Mpx/s", jpeg_mpxs("decode", threads=dthreads),
                                   f"measured {dthreads}-thread cv2.imdecode")
                  + f"; {runs[True][0] / runs[False][0]:.1f}x OpenSlide; pixels identical: {same}")


if __name__ == "__main__":
    main()
