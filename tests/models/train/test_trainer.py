"""The trainer end to end on a synthetic cohort (1024-d bags, planted instances, two slides per
patient): every registered model type learns it, the outputs follow CLAM's layout, TensorBoard
holds the attention images, and the best checkpoint drives the heatmap pipeline."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from models.checkpoints import load_mil_checkpoint
from models.mil import list_mil_models
from models.train.config import TrainConfig, apply_overrides
from models.train.run import output_dir, train_run
from models.train.splits import Split, read_split_csv, write_split_csv
from wsi_core.errors import ConfigError
from wsi_core.formats import write_features_h5

from .cohort import grid_coords, make_cohort

pytestmark = pytest.mark.slow

EPOCHS = 4
# TransMIL (a transformer over the bag) needs more epochs on 34 training bags; smaller than its default width
SMALL = {"transmil": {"embed_dim": 128, "num_heads": 2, "num_landmarks": 8}}
EPOCHS_OF = {"transmil": 8}
# the options every run does not use, exercised end to end on one model
OPTIONS_OF = {"abmil": {"optim.class_weights": True, "optim.weighted_sample": True, "data.max_patches": 12,
                        "optim.scheduler": "warmup_cosine", "optim.warmup_epochs": 1, "optim.opt": "adamw",
                        "optim.accumulate_grad_batches": 2, "optim.early_stopping": True, "optim.min_epochs": 2,
                        "optim.patience": 2, "optim.monitor": "val_auc", "optim.max_epochs": 6}}


def _cfg(csv, feats, out, model_type="clam_sb", **over) -> TrainConfig:
    base = {"data.csv_path": str(csv), "data.data_root_dir": str(feats), "run.results_dir": str(out),
            "run.exp_code": model_type, "model.model_type": model_type, "optim.max_epochs": EPOCHS_OF.get(model_type, EPOCHS),
            "optim.lr": 5e-4, "data.label_dict": {"normal": 0, "tumor": 1}, "run.accelerator": "cpu",
            "model.kwargs": SMALL.get(model_type, {}), "data.preload": True}
    return apply_overrides(TrainConfig(), {**base, **over})


def _patients(csv, ids):
    df = pd.read_csv(csv)
    return set(df.set_index("slide_id").loc[list(ids), "case_id"])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    csv, feats, planted = make_cohort(root, n_patients=24, n_inst=16, signal=3.0)
    return root, csv, feats, planted


@pytest.mark.parametrize("model_type", [m for m in list_mil_models() if m != "clam_sb"])
def test_every_model_type_learns_the_planted_signal(cohort, tmp_path, model_type):
    root, csv, feats, _ = cohort
    torch.set_num_threads(1)
    cfg = _cfg(csv, feats, tmp_path, model_type, **{"logging.log_data": False, **OPTIONS_OF.get(model_type, {})})
    [fold] = train_run(cfg)
    assert fold.test["auc"] >= 0.95, fold.test
    out = output_dir(cfg)
    split = read_split_csv(out / "splits" / "splits_0.csv")
    tr, va, te = (_patients(csv, split.subset(n)) for n in ("train", "val", "test"))
    assert not (tr & va or tr & te or va & te) and len(te) == 4      # 2 patients per class: 15 % of 12
    model = load_mil_checkpoint(out / "s_0_checkpoint.pt", model_type=model_type, n_classes=2, embed_dim=1024,
                                model_kwargs=None)
    assert model.in_dim == 1024


@pytest.fixture(scope="module")
def clam_run(cohort, tmp_path_factory):
    """CLAM-SB on a given CLAM split whose first val slide's coords do not match its features
    (h5 coords of 10 patches, .pt features of 16)."""
    root, csv, feats, planted = cohort
    out = tmp_path_factory.mktemp("clam_run")
    df = pd.read_csv(csv)
    cases = sorted(df["case_id"].unique())
    by = {n: [c for i, c in enumerate(cases) if (i % 12) in r] for n, r in
          (("train", range(0, 8)), ("val", range(8, 10)), ("test", range(10, 12)))}
    split = Split(*(tuple(df[df["case_id"].isin(by[n])]["slide_id"]) for n in ("train", "val", "test")))
    write_split_csv(out / "splits" / "splits_0.csv", split)
    bad = split.val[0]
    write_features_h5(feats / "h5_files" / f"{bad}.h5", np.zeros((10, 1024), np.float32), grid_coords(10))
    torch.set_num_threads(1)
    cfg = _cfg(csv, feats, out / "results", **{"split.split_dir": str(out / "splits"), "logging.heatmap_panel": 3})
    [fold] = train_run(cfg)
    return cfg, fold, split, bad, planted


def test_clam_run_outputs(clam_run, cohort):
    cfg, fold, split, _, _ = clam_run
    out = output_dir(cfg)
    assert out.name == "clam_sb_s1" and fold.test["auc"] >= 0.95
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:5]) == ["folds", "test_auc", "val_auc", "test_acc", "val_acc"]
    assert summary["test_auc"].iloc[0] == pytest.approx(fold.test["auc"])
    preds = pd.read_csv(out / "fold_0_predictions.csv")
    assert list(preds["slide_id"]) == list(split.test) and {"p_normal", "p_tumor", "Y", "Y_hat"} <= set(preds.columns)
    sd = torch.load(out / "s_0_checkpoint.pt", weights_only=True)
    assert "attention_net.0.weight" in sd and "instance_classifiers.1.weight" in sd
    assert (out / "s_0_last.pt").is_file() and (out / "config.yaml").is_file()
    assert not (out / "splits").exists()          # the given split is read, not rewritten
    pl = pd.read_csv(out / "fold_0_heatmap_process_list.csv")
    assert list(pl["slide_id"]) == list(split.test) and all(p.endswith(".h5") for p in pl["features_path"])


def test_tensorboard_holds_the_attention_every_epoch(clam_run, caplog):
    cfg, _, split, bad, _ = clam_run
    ev = EventAccumulator(str(output_dir(cfg) / "tensorboard" / "fold_0"), size_guidance={"images": 0, "scalars": 0})
    ev.Reload()
    tags = ev.Tags()
    for sid in split.val[1:3]:
        imgs = ev.Images(f"val/spatial_attention_heatmap/{sid}")
        assert [i.step for i in imgs] == list(range(EPOCHS))
        assert imgs[0].width == 8 * 256 // 32 and imgs[0].height == 2 * 256 // 32
    assert [i.step for i in ev.Images(f"val/grid_attention_heatmap/{bad}")] == list(range(EPOCHS))
    assert f"val/spatial_attention_heatmap/{bad}" not in tags["images"]
    for s in ("train/loss", "train/instance_loss", "train/bag_loss", "val/auc", "val/bacc", "val/f1", "lr", "test/auc"):
        assert s in tags["scalars"], s
    assert "test/confusion_matrix" in tags["images"]


def test_the_best_checkpoint_drives_the_heatmap_pipeline(clam_run, tmp_path, monkeypatch):
    from heatmaps.config import parse_config
    from heatmaps.demo import make_demo_slide
    from heatmaps.layout import slide_outputs
    from heatmaps.run import run_config
    from wsi_core.formats import read_scores

    cfg, _, split, _, planted = clam_run
    monkeypatch.delenv("RESNET50_TRUNC_CKPT_PATH", raising=False)
    pos = [s for s in split.test if s in planted]
    slides = tmp_path / "slides"
    for sid in pos:
        make_demo_slide(slides / f"{sid}.tiff", seed=1, size=(2048, 1024))
    pl = tmp_path / "pl.csv"
    feats = cfg.data.data_root_dir
    pd.DataFrame({"slide_id": pos, "label": "tumor",
                  "features_path": [f"{feats}/h5_files/{s}.h5" for s in pos]}).to_csv(pl, index=False)
    hcfg = parse_config({
        "exp_arguments": {"save_exp_code": "T", "raw_save_dir": str(tmp_path / "raw"),
                          "production_save_dir": str(tmp_path / "prod"), "results_dir": str(tmp_path / "res")},
        "data_arguments": {"data_dir": str(slides), "process_list": str(pl), "slide_ext": ".tiff",
                           "label_dict": {"normal": 0, "tumor": 1}},
        "patching_arguments": {"patch_size": 256, "overlap": 0.0},
        "model_arguments": {"ckpt_path": str(output_dir(cfg) / "s_0_checkpoint.pt"), "model_type": "clam_sb"},
        "heatmap_arguments": {"vis_level": -1, "save_orig": False},
        "sample_arguments": {"samples": []},
    }, source="t.yaml")
    summary = run_config(hcfg, progress=False)
    assert not summary.failed, summary.failed
    assert summary.n_encoded == 0
    recalls = []
    for sid in pos:
        s = read_scores(slide_outputs(hcfg, sid, "tumor").blockmap_h5)
        k = len(planted[sid])
        assert np.array_equal(s.coords, grid_coords(16))
        recalls.append(len(set(np.argsort(-s.scores)[:k]) & set(planted[sid])) / k)
    assert min(recalls) >= 0.8, recalls


def test_a_resumed_run_with_another_config_stops(clam_run):
    cfg, fold, *_ = clam_run
    ckpt = output_dir(cfg) / "s_0_checkpoint.pt"
    mtime = ckpt.stat().st_mtime_ns
    [again] = train_run(cfg)                       # the same config: the complete fold is not retrained
    assert ckpt.stat().st_mtime_ns == mtime and again.test["auc"] == fold.test["auc"]
    with pytest.raises(ConfigError, match="holds a run with another config \\(optim.lr differ\\)"):
        train_run(apply_overrides(cfg, {"optim.lr": 1e-3}))


def test_one_epoch_writes_the_checkpoint_of_that_epoch(cohort, tmp_path):
    """The best-checkpoint callback sees the metrics of the epoch it saves (Lightning runs
    callbacks' epoch-end hooks before the module's)."""
    _, csv, feats, _ = cohort
    cfg = _cfg(csv, feats, tmp_path, "dsmil", **{"optim.max_epochs": 1, "logging.log_data": False})
    train_run(cfg)
    out = output_dir(cfg)
    best = torch.load(out / "s_0_checkpoint.pt", weights_only=True)
    last = torch.load(out / "s_0_last.pt", weights_only=True)
    assert best.keys() == last.keys() and all(torch.equal(best[k], last[k]) for k in best)
