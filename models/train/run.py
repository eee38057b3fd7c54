"""A training run: the cohort, the folds, one Lightning fit per fold, the outputs.

Outputs in ``{results_dir}/{exp_code}_s{seed}/`` (CLAM's folder and file names where CLAM has one):

* ``splits/splits_{k}.csv`` (CLAM's split files; when ``split_dir`` is given and holds them, they are read
  instead and not rewritten);
* ``s_{k}_checkpoint.pt`` (best epoch by ``optim.monitor``; the last epoch without validation
  slides), ``s_{k}_last.pt``: plain state dicts of the registry's model, loaded by the heatmap
  pipeline as they are;
* ``fold_{k}_predictions.csv``: per test slide ``slide_id, case_id, label, Y, Y_hat, p_{class}``;
* ``summary.csv``: per fold ``folds, test_auc, val_auc, test_acc, val_acc`` (CLAM's columns) plus
  ``test_bacc, test_f1, val_bacc, val_f1``; ``summary_stats.csv``: mean and std over folds;
* ``fold_{k}_heatmap_process_list.csv``: a heatmap process list of the fold's test slides
  (``slide_id``, ``label``, ``features_path``: the training bag), for ``create_heatmaps.py`` with
  ``model_arguments.ckpt_path`` = the fold's checkpoint (the command is logged);
* ``config.yaml``: the effective config (a rerun into the folder must have the same config; its
  complete folds - checkpoint and predictions written - are evaluated again, not retrained); ``tensorboard/fold_{k}/``: TensorBoard event files.

With several devices (DDP, one process each) every process builds the same folds (same seed);
only rank 0 writes files.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader, WeightedRandomSampler

from wsi_core.errors import ConfigError
from wsi_core.io import atomic_path

from ..checkpoints import load_mil_checkpoint
from ..mil import predict_bag
from .config import TrainConfig, config_to_dict
from .data import BagDataset, Cohort, build_cohort, load_coords, load_features
from .losses import class_weights
from .metrics import classification_metrics, mean_std
from .module import AttentionImages, BestStateDict, MILModule, build_model
from .splits import Split, check_split, make_splits, read_split_csv, split_csv_path, write_split_csv

__all__ = ["train_run", "output_dir", "checkpoint_name", "FoldResult"]

log = logging.getLogger(__name__)


def output_dir(cfg: TrainConfig) -> Path:
    """CLAM's results folder ``{results_dir}/{exp_code}_s{seed}``."""
    return Path(cfg.run.results_dir) / f"{cfg.run.exp_code}_s{cfg.run.seed}"


def checkpoint_name(k: int) -> str:
    """CLAM's checkpoint name of fold ``k``."""
    return f"s_{k}_checkpoint.pt"


@dataclass
class FoldResult:
    fold: int
    test: dict
    val: dict


def _write_csv(df: pd.DataFrame, path: Path, **kw) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kw)


def _fold_range(cfg: TrainConfig, n: int) -> list[int]:
    start = 0 if cfg.split.k_start < 0 else cfg.split.k_start
    end = n if cfg.split.k_end < 0 else min(cfg.split.k_end, n)
    return list(range(start, end))


def resolve_splits(cfg: TrainConfig, cohort: Cohort, out: Path, *, write: bool) -> list[Split]:
    """Read the folds from ``split.split_dir`` when it holds ``splits_0.csv``, else make them
    (:func:`~.splits.make_splits`) and write them (``split_dir`` or ``{out}/splits``)."""
    s = cfg.split
    k = 1 if s.mode == "holdout" else s.k
    if s.split_dir and split_csv_path(s.split_dir, 0).is_file():
        n = len(list(Path(s.split_dir).glob("splits_*.csv")))
        ks = range(n if s.k_end < 0 else max(s.k_end, 1))
        return [read_split_csv(split_csv_path(s.split_dir, i), cohort.slides) for i in ks
                if split_csv_path(s.split_dir, i).is_file()]
    folds = make_splits(cohort.slides, mode=s.mode, k=k, val_frac=s.val_frac, test_frac=s.test_frac,
                        label_frac=s.label_frac, seed=cfg.run.seed, class_names=cohort.class_names)
    for i, f in enumerate(folds):
        check_split(f, cohort.slides, source=f"fold {i}")
        if write:
            write_split_csv(split_csv_path(s.split_dir or out / "splits", i), f)
    return folds


def _predict(model, cohort: Cohort, slide_ids: tuple[str, ...]) -> tuple[pd.DataFrame, dict]:
    rows = cohort.slides.set_index("slide_id")
    probs, out = [], []
    for sid in slide_ids:
        p = predict_bag(model, load_features(cohort.sources[sid])).probs
        probs.append(p)
        out.append({"slide_id": sid, "case_id": rows.at[sid, "case_id"], "label": rows.at[sid, "label"],
                    "Y": int(rows.at[sid, "y"]), "Y_hat": int(np.argmax(p)),
                    **{f"p_{n}": float(p[i]) for i, n in enumerate(cohort.class_names)}})
    df = pd.DataFrame(out)
    if not len(df):
        return df, classification_metrics(np.zeros(0), np.zeros((0, cohort.n_classes)), cohort.n_classes)
    return df, classification_metrics(df["Y"].to_numpy(), np.stack(probs), cohort.n_classes)


def _panel(cohort: Cohort, ids: tuple[str, ...], n: int) -> list:
    panel = []
    for sid in ids[:n]:
        src = cohort.sources[sid]
        try:
            coords, attrs = load_coords(src)
        except Exception as exc:  # noqa: BLE001 - a panel slide without readable coords falls back to the grid
            log.warning("slide %s: coordinates not readable (%s); its attention is logged as a grid", sid, exc)
            coords, attrs = None, {}
        panel.append((sid, load_features(src), coords, attrs))
    return panel


def _trainer(cfg: TrainConfig, out: Path, k: int, callbacks: list) -> L.Trainer:
    o = cfg.optim
    if o.early_stopping:
        callbacks.append(L.pytorch.callbacks.EarlyStopping(monitor=o.monitor, patience=o.patience,
                                                           mode="min" if o.monitor == "val_loss" else "max"))
    logger = False
    if cfg.logging.log_data:
        logger = L.pytorch.loggers.TensorBoardLogger(str(out), name="tensorboard", version=f"fold_{k}",
                                                     default_hp_metric=False)
    devices = cfg.run.devices
    strategy = "auto"
    if isinstance(devices, int) and devices > 1 or isinstance(devices, str) and devices not in ("1", "auto"):
        strategy = "ddp_find_unused_parameters_true"
    return L.Trainer(max_epochs=o.max_epochs, min_epochs=min(o.min_epochs, o.max_epochs) if o.early_stopping else None,
                     accelerator=cfg.run.accelerator, devices=devices, strategy=strategy,
                     precision=o.precision, accumulate_grad_batches=o.accumulate_grad_batches,
                     logger=logger, callbacks=callbacks, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     log_every_n_steps=1, deterministic=False)


def _loaders(cfg: TrainConfig, cohort: Cohort, fold: Split) -> tuple[DataLoader, DataLoader | None, BagDataset]:
    train = BagDataset(cohort, list(fold.train), max_patches=cfg.data.max_patches, preload=cfg.data.preload)
    g = torch.Generator().manual_seed(cfg.run.seed)
    if cfg.optim.weighted_sample:
        w = class_weights(train.labels, cohort.n_classes).numpy()[train.labels]
        sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.float64), len(train), replacement=True, generator=g)
        tl = DataLoader(train, batch_size=1, sampler=sampler, num_workers=cfg.data.num_workers)
    else:
        tl = DataLoader(train, batch_size=1, shuffle=True, generator=g, num_workers=cfg.data.num_workers)
    vl = None
    if fold.val:
        val = BagDataset(cohort, list(fold.val), preload=cfg.data.preload)
        vl = DataLoader(val, batch_size=1, shuffle=False, num_workers=cfg.data.num_workers)
    return tl, vl, train


def train_run(cfg: TrainConfig) -> list[FoldResult]:
    """Train (or with ``run.eval_only`` evaluate) every fold of the config; returns the results
    (empty on ranks other than 0).

    Raises:
        ConfigError: bad data, split or config (before any training starts); a resumed output
            folder whose ``config.yaml`` differs from this config.
    """
    if not cfg.data.csv_path or not cfg.data.data_root_dir:
        raise ConfigError("the dataset CSV and the features directory are needed: set --csv_path and --data_root_dir "
                          "(data.csv_path, data.data_root_dir)")
    out = output_dir(cfg)
    rank0 = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
    cohort = build_cohort(cfg.data.csv_path, cfg.data.data_root_dir, cfg.data.label_dict)
    if cfg.model.embed_dim is not None and cfg.model.embed_dim != cohort.dim:
        raise ConfigError(f"model.embed_dim is {cfg.model.embed_dim} but the features in {cfg.data.data_root_dir} are "
                          f"{cohort.dim}-d; set --embed_dim {cohort.dim} or leave it unset")
    _check_resume(cfg, out)
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    if cfg.run.eval_only:
        return _evaluate(cfg, cohort, out, rank0)
    folds = resolve_splits(cfg, cohort, out, write=rank0)
    results = []
    for k in _fold_range(cfg, len(folds)):
        if (out / f"fold_{k}_predictions.csv").is_file() and (out / checkpoint_name(k)).is_file():
            log.info("fold %d is complete in %s (same config): evaluated from its checkpoint, not retrained", k, out)
            res = _finished_fold(cfg, cohort, folds[k], k, out) if rank0 else None
        else:
            res = _train_fold(cfg, cohort, folds[k], k, out, rank0)
        if res is not None:
            results.append(res)
    if rank0:
        write_summary(results, out)
    return results


def _finished_fold(cfg: TrainConfig, cohort: Cohort, fold: Split, k: int, out: Path) -> FoldResult:
    model = build_model(cfg, n_classes=cohort.n_classes, in_dim=cohort.dim)
    model.load_state_dict(torch.load(out / checkpoint_name(k), map_location="cpu", weights_only=True))
    return _report(cfg, cohort, model.eval(), fold, k, out)


def _check_resume(cfg: TrainConfig, out: Path) -> None:
    prev = out / "config.yaml"
    if not prev.is_file():
        return
    old = yaml.safe_load(prev.read_text()) or {}
    new = config_to_dict(cfg)
    ignore = {("run", "eval_only"), ("run", "models_dir"), ("run", "devices"), ("run", "accelerator"),
              ("split", "k_start"), ("split", "k_end")}
    diff = [f"{s}.{k}" for s in new for k in new[s] if (s, k) not in ignore and old.get(s, {}).get(k) != new[s][k]]
    if diff:
        raise ConfigError(f"{out} holds a run with another config ({', '.join(diff[:5])} differ); use a new --exp_code "
                          "or --results_dir, or delete the folder")


def _train_fold(cfg: TrainConfig, cohort: Cohort, fold: Split, k: int, out: Path, rank0: bool) -> FoldResult | None:
    L.seed_everything(cfg.run.seed + k, workers=True, verbose=False)
    tl, vl, train = _loaders(cfg, cohort, fold)
    cw = class_weights(train.labels, cohort.n_classes) if cfg.optim.class_weights else None
    module = MILModule(cfg, n_classes=cohort.n_classes, in_dim=cohort.dim, class_weight=cw)
    best = BestStateDict(out / checkpoint_name(k), out / f"s_{k}_last.pt", monitor=cfg.optim.monitor)
    callbacks: list = [best]
    if cfg.logging.log_data and cfg.logging.heatmap_panel and fold.val:
        callbacks.append(AttentionImages(_panel(cohort, fold.val, cfg.logging.heatmap_panel),
                                         downsample=cfg.logging.heatmap_downsample,
                                         max_size=cfg.logging.heatmap_max_size, cmap=cfg.logging.heatmap_cmap))
    trainer = _trainer(cfg, out, k, callbacks)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, train_dataloaders=tl, val_dataloaders=vl)
    if not trainer.is_global_zero:
        return None
    model = module.model.cpu().eval()
    if vl is None:  # no validation: the last epoch is the checkpoint
        with atomic_path(out / checkpoint_name(k)) as tmp:
            torch.save(model.state_dict(), tmp)
    else:
        model.load_state_dict(torch.load(out / checkpoint_name(k), map_location="cpu", weights_only=True))
    _heatmap_process_list(cfg, cohort, fold, k, out)
    return _report(cfg, cohort, model, fold, k, out, trainer)


def _heatmap_process_list(cfg: TrainConfig, cohort: Cohort, fold: Split, k: int, out: Path) -> Path:
    """Write the fold's test slides as a heatmap process list and log how to run it."""
    rows = cohort.slides.set_index("slide_id")
    src = cohort.sources
    df = pd.DataFrame({"slide_id": list(fold.test), "label": [rows.at[s, "label"] for s in fold.test],
                       "features_path": [str((src[s].coords or src[s].features).resolve()) for s in fold.test]})
    path = out / f"fold_{k}_heatmap_process_list.csv"
    _write_csv(df, path, index=False)
    log.info("heatmaps of fold %d's test slides: create_heatmaps.py --config YOUR.yaml --set data_arguments.process_list=%s "
             "--set model_arguments.ckpt_path=%s --set model_arguments.model_type=%s", k, path,
             (out / checkpoint_name(k)).resolve(), cfg.model.model_type)
    return path


def _report(cfg, cohort, model, fold: Split, k: int, out: Path, trainer=None) -> FoldResult:
    test_df, test_m = _predict(model, cohort, fold.test)
    _, val_m = _predict(model, cohort, fold.val)
    _write_csv(test_df, out / f"fold_{k}_predictions.csv", index=False)
    logger = getattr(trainer, "logger", None) if trainer is not None else None
    writer = getattr(logger, "experiment", None) if logger else None
    if writer is not None:
        for name, v in test_m.items():
            if name != "confusion" and np.isfinite(v):
                writer.add_scalar(f"test/{name}", v, trainer.current_epoch)
        _log_confusion(writer, test_m["confusion"], cohort.class_names, trainer.current_epoch)
        writer.flush()
    log.info("fold %d: test auc %.4f acc %.4f; val auc %.4f acc %.4f", k, test_m["auc"], test_m["acc"],
             val_m["auc"], val_m["acc"])
    return FoldResult(k, test_m, val_m)


def _log_confusion(writer, cm: np.ndarray, names: list[str], step: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(3 + 0.4 * len(names), 3 + 0.4 * len(names)))
    ConfusionMatrixDisplay(cm, display_labels=names).plot(ax=ax, colorbar=False)
    writer.add_figure("test/confusion_matrix", fig, step)
    plt.close(fig)


def write_summary(results: list[FoldResult], out: Path) -> None:
    """``summary.csv`` (CLAM's columns first) and ``summary_stats.csv`` (mean, std over folds)."""
    rows = [{"folds": r.fold, "test_auc": r.test["auc"], "val_auc": r.val["auc"], "test_acc": r.test["acc"],
             "val_acc": r.val["acc"], "test_bacc": r.test["bacc"], "test_f1": r.test["f1"],
             "val_bacc": r.val["bacc"], "val_f1": r.val["f1"]} for r in results]
    df = pd.DataFrame(rows)
    _write_csv(df, out / "summary.csv", index=False)
    stats = pd.DataFrame([{"metric": c, "mean": mean_std(df[c].tolist())[0], "std": mean_std(df[c].tolist())[1]}
                          for c in df.columns if c != "folds"])
    _write_csv(stats, out / "summary_stats.csv", index=False)


def _evaluate(cfg: TrainConfig, cohort: Cohort, out: Path, rank0: bool) -> list[FoldResult]:
    """``--eval_only``: load ``s_{k}_checkpoint.pt`` of ``run.models_dir`` and score each fold's
    test slides (every slide of the cohort when no split_dir is given)."""
    mdir = Path(cfg.run.models_dir or out)
    ckpts = sorted(mdir.glob("s_*_checkpoint.pt"), key=lambda p: int(p.name.split("_")[1]))
    if not ckpts:
        raise ConfigError(f"--eval_only: no s_{{k}}_checkpoint.pt in {mdir}; set --models_dir")
    if cfg.split.split_dir and split_csv_path(cfg.split.split_dir, 0).is_file():
        folds = {int(p.name.split("_")[1]): read_split_csv(split_csv_path(cfg.split.split_dir, int(p.name.split("_")[1])), cohort.slides)
                 for p in ckpts}
    else:
        all_ids = tuple(cohort.slides["slide_id"])
        folds = {int(p.name.split("_")[1]): Split((), (), all_ids) for p in ckpts}
    results = []
    for p in ckpts:
        k = int(p.name.split("_")[1])
        model = load_mil_checkpoint(p, model_type=cfg.model.model_type, n_classes=cohort.n_classes,
                                    embed_dim=cohort.dim, drop_out=cfg.model.drop_out)
        if rank0:
            results.append(_report(cfg, cohort, model, folds[k], k, out))
    if rank0:
        write_summary(results, out)
    return results
