"""Slides per hour of a cohort run with 1, 2 and 4 local workers, and the scaling efficiency.

A cohort of synthetic slides with pre-extracted features (tests/heatmaps/tiny_cohort.py: no
encoder, so the work per slide is tissue, the MIL model, the fine pass and the images) runs with
``create-heatmaps --config ... --executor local --workers N``, each N into fresh output folders;
the wall time includes starting the workers (Python + torch import, model load). Efficiency =
(rate with N workers / rate with 1) / N. Each worker gets cores // N threads.

    PYTHONPATH=$PWD python benchmarks/bench_workers.py [--slides 16] [--size 1024] [--workers 1 2 4]

Prints the machine's cores and load average beside the figures: on a shared machine with 2 cores
no more than 2x can be expected, and other processes' load lowers it further.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.heatmaps.tiny_cohort import make_tiny_cohort, variant  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=int, default=16)
    ap.add_argument("--size", type=int, default=1024, help="level-0 px of each square slide (multiple of 64)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_workers_") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        config = make_tiny_cohort(root, args.slides, size=args.size)
        print(f"cohort: {args.slides} synthetic slides {args.size}x{args.size} px, "
              f"{(args.size // 64) ** 2} pre-extracted 32-d patches each ({time.perf_counter() - t:.1f} s to make)")
        print(f"machine: {os.cpu_count()} cores; load average before: {os.getloadavg()}")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        rates = {}
        for n in args.workers:
            cfg = variant(config, f"w{n}")
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "create_heatmaps", "--config", str(cfg), "--executor", "local",
                                "--workers", str(n), "--quiet"], env=env, cwd=REPO, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if r.returncode != 0:
                raise SystemExit(f"{n} workers failed:\n{r.stderr[-2000:]}")
            rates[n] = args.slides / wall * 3600
            eff = rates[n] / rates[args.workers[0]] / (n / args.workers[0])
            print(f"{n} workers: {wall:6.1f} s wall, {rates[n]:7.0f} slides/h, scaling efficiency {eff:5.0%}  "
                  f"(load average {os.getloadavg()[0]:.1f})")
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
