"""A 95 % overlap map of the TCGA slide (256-px patches, step 13 px: 400x a plain grid's
patches), exact and fully convolutional, with the memory each needs.

* fully convolutional: the whole tissue grid, timed, in a fresh process (its peak RSS);
* exact (patch-wise, band reads, ``precision`` fp32 and auto): ``--roi-patches`` patches of the
  grid's centre, timed in a fresh process each, and the whole map's time extrapolated from that
  rate (said so in the output); ``--roi-patches 0``: the whole grid, timed (about 20 minutes in
  bf16 on the idle 2-core machine);
* the fine pass's feature memory: an unchunked pass holds N x D float32; the pipeline's chunked
  fine pass (``heatmaps.pipeline.FINE_CHUNK_BYTES``) at most one chunk.

    python benchmarks/bench_overlap95.py [--roi-patches 128 | 0] [--only exact:auto ...] [--weights W]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
SHARED = Path(os.environ.get("WSI_HEATMAPS_SHARED", ROOT.parent / "shared"))
SLIDE = SHARED / "slides/tcga-cr-7395-01a-01-ts1.svs"
SIZE, OVERLAP = 256, 0.95


def grid_95() -> np.ndarray:
    from wsi_core import dense_step, open_slide, patch_grid
    from wsi_core.tissue import SegmentationParams, segment_tissue

    with open_slide(SLIDE) as slide:
        contours = segment_tissue(slide, SegmentationParams(a_t=1, a_h=1))
        return patch_grid(contours, level_dimensions=slide.level_dimensions, level_downsamples=slide.level_downsamples,
                          patch_level=0, patch_size=SIZE, step_size=dense_step(SIZE, OVERLAP))


def child(mode: str, precision: str, n_roi: int, weights: str) -> None:
    import torch

    from models import create_encoder, resolve_precision, tune_cpu_allocator
    from models.extract import extract_features_dense
    from models.fully_conv import extract_features_fully_conv

    tune_cpu_allocator()
    torch.set_num_threads(2)
    grid = grid_95()
    prec = resolve_precision(precision, "cpu")
    enc = create_encoder("resnet50_trunc", target_img_size=224, weights_path=weights, precision=prec)
    kw = dict(patch_level=0, patch_size=SIZE, encoder=enc, precision=prec, channels_last=prec == "bf16", progress=False)
    if mode == "fully_conv":
        coords = grid
        extract_features_fully_conv(SLIDE, grid[:4], **kw)      # warm-up
        t = time.perf_counter()
        extract_features_fully_conv(SLIDE, coords, **kw)
    else:                                                      # the grid's centre rows, row-major
        order = np.lexsort((grid[:, 0], grid[:, 1]))
        mid = len(order) // 2
        coords = grid[order[mid:mid + n_roi]] if n_roi > 0 else grid
        extract_features_dense(SLIDE, coords[:8], batch_size_extract=32, num_workers=0, **kw)
        t = time.perf_counter()
        extract_features_dense(SLIDE, coords, batch_size_extract=32, num_workers=0, **kw)
    dt = time.perf_counter() - t
    print(json.dumps({"n": len(coords), "grid": len(grid), "seconds": dt, "precision": prec,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roi-patches", type=int, default=128, help="exact: centre patches timed (0: the whole grid)")
    ap.add_argument("--only", action="append", metavar="MODE:PRECISION",
                    help="run only these cases (fully_conv|exact : auto|fp32; repeatable)")
    ap.add_argument("--weights", default=str(SHARED / "clam_reference/checkpoints/resnet50_trunc_seed0.safetensors"))
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.roi_patches, args.weights)
        return
    from hw_limits import limit_line, load_line
    from heatmaps.pipeline import FINE_CHUNK_BYTES

    gflop = 6.56   # resnet50_trunc (v1.5) at 224 px, torch.utils.flop_counter
    print(f"TCGA slide {SLIDE.name}, overlap {OVERLAP} (step 13 px), 256-px patches at level 0, resnet50_trunc "
          f"224 px; {load_line()}")
    runs = {}
    cases = (("fully_conv", "auto"), ("fully_conv", "fp32"), ("exact", "auto"), ("exact", "fp32"))
    if args.only:
        cases = tuple(tuple(c.split(":")) for c in args.only)
    for mode, prec in cases:
        proc = subprocess.run([sys.executable, __file__, "--child", mode, prec, "--roi-patches", str(args.roi_patches),
                               "--weights", args.weights], capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        runs[mode, prec] = r
        rate = r["n"] / r["seconds"]
        whole = r["grid"] / rate
        how = "measured over the whole grid" if r["n"] == r["grid"] else \
            f"measured on {r['n']} centre patches, whole map EXTRAPOLATED"
        line = f"; encoder {limit_line(rate, gflop, r['precision'])}" if mode == "exact" else ""
        print(f"  {mode:10s} {prec:4s}->{r['precision']}: {rate:7.1f} patches/s; {r['grid']} patches in "
              f"{whole / 60:6.1f} min ({how}); peak RSS {r['peak_rss_mib']:.0f} MiB {line}")
    for prec in ("auto", "fp32"):
        if ("fully_conv", prec) not in runs or ("exact", prec) not in runs:
            continue
        fc, ex = runs["fully_conv", prec], runs["exact", prec]
        print(f"  fully convolutional vs exact ({prec}): "
              f"{(fc['n'] / fc['seconds']) / (ex['n'] / ex['seconds']):.0f}x faster")
    n = next(iter(runs.values()))["grid"]
    print(f"  fine-pass features: an unchunked pass holds {n} x 1024 float32 = {n * 4096 / 2**20:.0f} MiB; the "
          f"chunked fine pass at most {min(n, FINE_CHUNK_BYTES // 4096) * 4096 / 2**20:.0f} MiB "
          f"(FINE_CHUNK_BYTES); scores and coords {n * (16 + 4 + 4 + 8) / 2**20:.1f} MiB")
    print(load_line())


if __name__ == "__main__":
    main()
