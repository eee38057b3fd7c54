"""``train-mil --eval_only`` on the real CLAM checkpoints of ../shared/mil."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from models.train.cli import main

SLIDES = {"C3L-01663-21": "LSCC", "C3L-03262-22": "LUAD"}


def test_clam_demo_checkpoint_evaluates_as_clam_did(shared_dir, tmp_path):
    demo = shared_dir / "mil" / "clam_demo"
    want = json.loads((shared_dir / "mil" / "clam_demo_verification.json").read_text())
    csv = tmp_path / "d.csv"
    pd.DataFrame({"case_id": list(SLIDES), "slide_id": list(SLIDES), "label": list(SLIDES.values())}).to_csv(csv, index=False)
    models = tmp_path / "models"
    models.mkdir()
    (models / "s_0_checkpoint.pt").symlink_to(demo / "s_0_checkpoint.pt")
    for k in (6, 9):   # CLAM's Camelyon17 folds: they load and run (on these features their output means nothing)
        (models / f"s_{k}_checkpoint.pt").symlink_to(shared_dir / "mil" / "clam_camelyon17_wql" / f"s_{k}_checkpoint.pt")
    rc = main(["--eval_only", "--models_dir", str(models), "--data_root_dir", str(demo), "--csv_path", str(csv),
               "--label_dict", '{"LUAD": 0, "LSCC": 1}', "--model_type", "clam_sb", "--results_dir", str(tmp_path / "r"),
               "--exp_code", "eval", "--quiet"])
    assert rc == 0
    out = tmp_path / "r" / "eval_s1"
    preds = pd.read_csv(out / "fold_0_predictions.csv").set_index("slide_id")
    for sid in SLIDES:
        assert preds.at[sid, "p_LSCC"] == pytest.approx(want[f"clam_demo/{sid}"]["p_LUAD_p_LSCC"][1], abs=6e-4)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["folds"]) == [0, 6, 9] and summary["test_auc"].iloc[0] == 1.0


def test_eval_only_without_checkpoints_says_where(shared_dir, tmp_path, capsys):
    demo = shared_dir / "mil" / "clam_demo"
    csv = tmp_path / "d.csv"
    pd.DataFrame({"case_id": list(SLIDES), "slide_id": list(SLIDES), "label": list(SLIDES.values())}).to_csv(csv, index=False)
    rc = main(["--eval_only", "--models_dir", str(tmp_path), "--data_root_dir", str(demo), "--csv_path", str(csv),
               "--results_dir", str(tmp_path / "r"), "--quiet"])
    assert rc == 2
    assert f"no s_{{k}}_checkpoint.pt in {tmp_path}; set --models_dir" in capsys.readouterr().err
