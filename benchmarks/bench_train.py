"""Trainer throughput on the CPU: epoch time and peak memory of ``train-mil`` (CLAM-SB, small,
instance loss on) on a synthetic cohort of ``--bags`` bags x ``--patches`` patches x ``--dim``
features (CLAM ``pt_files/``, read from disk every step as in a real run; no ``h5_files/``, so the
TensorBoard panel slide is drawn in the grid layout).

    python benchmarks/bench_train.py [--bags 200] [--patches 5000] [--dim 1024] [--epochs 1] [--dir DIR]

Prints the seconds per training epoch (train bags only; validation timed apart), bags/s and
patches/s, and the process's peak resident memory (``ru_maxrss``, imports included), with the CPU
count, torch threads and the load average beside them: on a shared machine the figures are
upper bounds of the time.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_cohort(root: Path, bags: int, patches: int, dim: int) -> Path:
    from models.pt_features import write_pt_features
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for b in range(bags):
        sid = f"slide_{b:04d}"
        h = rng.standard_normal((patches, dim), dtype=np.float32)
        if (b // 2) % 2:
            h[:50, :32] += 1.0
        write_pt_features(root / "features" / "pt_files" / f"{sid}.pt", h)
        rows.append({"case_id": f"p{b // 2:04d}", "slide_id": sid, "label": ["normal", "tumor"][(b // 2) % 2]})
    pd.DataFrame(rows).to_csv(root / "dataset.csv", index=False)
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bags", type=int, default=200)
    ap.add_argument("--patches", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dir", help="cohort folder (kept); default a temporary one (removed)")
    args = ap.parse_args()

    import lightning as L
    import torch

    from models.train.config import TrainConfig, apply_overrides
    from models.train.run import train_run

    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_train_"))
    t0 = time.perf_counter()
    if not (tmp / "dataset.csv").is_file():
        make_cohort(tmp, args.bags, args.patches, args.dim)
    t_make = time.perf_counter() - t0

    times: dict[str, list[float]] = {"train": [], "val": []}

    class Timer(L.Callback):
        def on_train_epoch_start(self, trainer, *a):
            self.t = time.perf_counter()
            times["n_train"] = [trainer.num_training_batches]

        def on_validation_epoch_start(self, *a):
            times["train"].append(time.perf_counter() - self.t)
            self.v = time.perf_counter()

        def on_validation_epoch_end(self, *a):
            times["val"].append(time.perf_counter() - self.v)

    import models.train.run as run_mod
    orig = run_mod._trainer
    run_mod._trainer = lambda cfg, out, k, callbacks: orig(cfg, out, k, [Timer(), *callbacks])
    cfg = apply_overrides(TrainConfig(), {
        "data.csv_path": str(tmp / "dataset.csv"), "data.data_root_dir": str(tmp / "features"),
        "run.results_dir": str(tmp / "results"), "run.exp_code": f"bench_{time.time_ns()}", "run.accelerator": "cpu",
        "optim.max_epochs": args.epochs, "model.model_type": "clam_sb", "logging.heatmap_panel": 1})
    t1 = time.perf_counter()
    train_run(cfg)
    t_run = time.perf_counter() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    n_train = int(times["n_train"][0])
    ep = float(np.mean(times["train"]))
    print(f"cohort: {args.bags} bags x {args.patches} patches x {args.dim}-d float32 "
          f"({args.bags * args.patches * args.dim * 4 / 1e9:.1f} GB on disk, written in {t_make:.0f} s)")
    print(f"train epoch (clam_sb small, instance loss, {n_train} training bags): {ep:.1f} s = {n_train / ep:.2f} bags/s, "
          f"{n_train * args.patches / ep:,.0f} patches/s; validation pass {np.mean(times['val']):.1f} s; "
          f"whole run incl. test {t_run:.1f} s")
    print(f"peak resident memory: {peak:.2f} GiB (ru_maxrss, imports included)")
    print(f"hardware: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()} (shared machine: times are upper bounds)")
    if not args.dir:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
