"""Whole-run seconds for CLAM's two-slide reference config (../shared/clam_reference/real_sb).

Runs the unchanged CLAM config (paths re-pointed: slides, seeded checkpoint and encoder weights
from ../shared, outputs in a temporary dir) at fp32 on the CPU, checks the outputs against CLAM's
(coords, features, attention, percentiles, file names) and prints the seconds beside CLAM's own
measured run on this machine (timings.json). Run alone: other load on the 2 cores skews it.

    python benchmarks/bench_reference_run.py [--threads 2] [--num-workers N]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--num-workers", type=int, default=None, help="patch-reading workers (default: the config's)")
    ap.add_argument("--batch-size", type=int, default=None, help="encoder batch (default: CLAM's config value, 64)")
    ap.add_argument("--max-memory-gb", type=float, default=None, help="exp_arguments.max_memory_gb (default: the config default)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests" / "heatmaps"))
    from conftest import reference_config  # the same re-pointing the parity test uses
    from test_clam_reference_parity import _compare_run

    from heatmaps.run import run_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ref = SHARED / "clam_reference"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        exp = {}
        if args.num_workers is not None:
            exp["num_workers"] = args.num_workers
        if args.batch_size is not None:
            exp["batch_size"] = args.batch_size
        if args.max_memory_gb is not None:
            exp["max_memory_gb"] = args.max_memory_gb
        cfg = reference_config(ref, "real_sb", out, exp_arguments=exp)
        t0 = time.perf_counter()
        summary = run_config(cfg, progress=False, device="cpu")
        run_s = time.perf_counter() - t0
        _compare_run(out, ref / "real_sb", "REAL_SB")
    clam = json.loads((ref / "real_sb" / "timings.json").read_text())["total_seconds_create_heatmaps"]
    total = time.perf_counter() - t_start
    print(f"slides: {len(summary.processed)} processed, {len(summary.failed)} failed; patches encoded: {summary.n_encoded} "
          f"(CLAM encodes 30 + 121 + 142 + 554 = 847)")
    print(f"run_config: {run_s:.1f} s; whole process incl. imports: {total:.1f} s; torch threads {args.threads}")
    print(f"CLAM on this machine (timings.json): {clam:.1f} s -> speed-up {clam / total:.2f}x (whole process)")
    print("outputs: identical to CLAM's within 1e-4 (coords, features, attention, percentiles, file names)")


if __name__ == "__main__":
    main()
