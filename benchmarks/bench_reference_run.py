"""Whole-run seconds for CLAM's two-slide reference config (../shared/clam_reference/real_sb).

Runs the unchanged CLAM config (paths re-pointed: slides, seeded checkpoint and encoder weights
from ../shared, outputs in a temporary dir) on the CPU at ``--precision`` (fp32: CLAM's; the outputs
are then checked against CLAM's: coords, features, attention, percentiles, file names; auto: bf16 on
a CPU with native bf16, checked against CLAM's within the bf16 tolerance: the Spearman of the
fine-pass attention and the file names) and prints the seconds beside CLAM's own measured run on
this machine (timings.json). Run alone: other load on the 2 cores skews it.

    python benchmarks/bench_reference_run.py [--precision fp32|auto] [--threads 2] [--num-workers N]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--num-workers", type=int, default=None, help="patch-reading workers (default: the config's)")
    ap.add_argument("--batch-size", type=int, default=None, help="encoder batch (default: CLAM's config value, 64)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "auto", "bf16"],
                    help="encoder_arguments.precision (fp32: CLAM's, outputs checked exactly)")
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
        cfg = reference_config(ref, "real_sb", out, exp_arguments=exp,
                               encoder_arguments={"precision": args.precision})
        t0 = time.perf_counter()
        summary = run_config(cfg, progress=False, device="cpu")
        run_s = time.perf_counter() - t0
        total = time.perf_counter() - t_start      # what CLAM's figure is: its process, not our output check
        from models import resolve_precision
        resolved = resolve_precision(args.precision, "cpu")
        if resolved == "fp32":
            _compare_run(out, ref / "real_sb", "REAL_SB")
            check = "outputs: identical to CLAM's within 1e-4 (coords, features, attention, percentiles, file names)"
        else:
            check = _compare_bf16(out, ref / "real_sb")
    clam = json.loads((ref / "real_sb" / "timings.json").read_text())["total_seconds_create_heatmaps"]
    print(f"slides: {len(summary.processed)} processed, {len(summary.failed)} failed; patches encoded: {summary.n_encoded} "
          f"(CLAM encodes 30 + 121 + 142 + 554 = 847)")
    print(f"precision {args.precision} -> {resolved}; run_config: {run_s:.1f} s; whole process incl. imports "
          f"(up to the end of the run, not the output check below): {total:.1f} s; torch threads {args.threads}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"CLAM on this machine (timings.json): {clam:.1f} s -> speed-up {clam / total:.2f}x (whole process)")
    print(check)


def _compare_bf16(out: Path, clam_run: Path) -> str:
    """bf16 outputs against CLAM's fp32 ones: the same fine-pass H5 files with the same coords, and
    the Spearman of their raw attention (the figure the precision's fidelity is judged by)."""
    import h5py
    from scipy.stats import spearmanr

    ours = sorted(out.rglob("*roi*.h5"))
    rhos = []
    for h5 in ours:
        (theirs,) = clam_run.rglob(h5.name)
        with h5py.File(h5, "r") as a, h5py.File(theirs, "r") as b:
            assert np.array_equal(a["coords"][:], b["coords"][:]), h5
            rhos.append(spearmanr(a["attention_scores"][:].ravel(), b["attention_scores"][:].ravel()).statistic)
    if not rhos:
        raise SystemExit(f"no fine-pass H5 under {out}")
    return (f"outputs: {len(ours)} fine-pass H5s with CLAM's coords; Spearman of their attention scores vs CLAM's "
            f"fp32 {', '.join(f'{r:.4f}' for r in rhos)}")


if __name__ == "__main__":
    main()
