"""DDP over two CPU processes (gloo): ``train_mil.py --devices 2`` trains the synthetic cohort on
the same folds as one process and writes one set of outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from models.train.data import build_cohort
from models.train.splits import holdout_split, read_split_csv

from .cohort import make_cohort

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


def test_ddp_two_cpu_processes(tmp_path):
    csv, feats, _ = make_cohort(tmp_path, n_patients=24, n_inst=16)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "train_mil.py"), "--csv_path", str(csv), "--data_root_dir", str(feats),
           "--results_dir", str(tmp_path / "r"), "--exp_code", "ddp", "--max_epochs", "4", "--lr", "5e-4",
           "--devices", "2", "--set", "run.accelerator=cpu", "--set", "data.preload=true", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "r" / "ddp_s1"
    cohort = build_cohort(csv, feats, None)
    assert read_split_csv(out / "splits" / "splits_0.csv") == holdout_split(cohort.slides, seed=1)
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 1 and summary["test_auc"].iloc[0] >= 0.95
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts)
    assert files == ["config.yaml", "fold_0_heatmap_process_list.csv", "fold_0_predictions.csv", "s_0_checkpoint.pt", "s_0_last.pt", "splits/splits_0.csv",
                     "summary.csv", "summary_stats.csv"]
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert len({p.name.split(".")[-2] for p in events}) == 1        # written by one process (pid in the name)
