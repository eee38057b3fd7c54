"""Seconds to write 1,000,000 heatmap patches as QuPath tiles (``wsi_core.qupath``), plain and gzip'ed,
with three measurements each, and to read the plain file back with the standard library (a check
that it is valid JSON with one feature per patch).

    python benchmarks/bench_geojson.py [--n 1000000]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_limits import disk_write_mbs, rate_line  # noqa: E402
from wsi_core.qupath import write_qupath_tiles  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(args.n)))
    coords = (np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[:args.n] * 128)
    m = {"attention_percentile": rng.uniform(0, 100, args.n), "attention_raw": rng.normal(size=args.n),
         "p_tumour": rng.uniform(0, 1, args.n)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tiles.geojson", "tiles.geojson.gz"):
            t0 = time.perf_counter()
            path = write_qupath_tiles(Path(tmp) / name, coords, (256, 256), m)
            dt = time.perf_counter() - t0
            print(f"{args.n:,} tiles -> {name}: {dt:.1f} s, {path.stat().st_size / 2**20:.0f} MiB")
            print("  " + rate_line("written", path.stat().st_size / dt / 1e6, "MB/s", disk_write_mbs(tmp),
                                   "measured disk write", "256 MiB + fsync in the same directory; the writer "
                                   "encodes JSON" + (", gzips" if name.endswith(".gz") else "") + " and writes in one pass"))
        t0 = time.perf_counter()
        doc = json.loads((Path(tmp) / "tiles.geojson").read_bytes())
        assert len(doc["features"]) == args.n
        print(f"read back with json.loads: {time.perf_counter() - t0:.1f} s, {len(doc['features']):,} features")


if __name__ == "__main__":
    main()
