"""The Lightning module that trains any registered MIL model, and its callbacks.

:class:`MILModule` wraps ``create_mil_model(model_type, ...)`` (the registry the heatmap pipeline
loads from), so ``module.model.state_dict()`` is the checkpoint layout the pipeline reads. One bag
per step (batch size 1); loss = bag loss (class-weighted CE, BCE for multi-label DSMIL); for
CLAM, ``bag_weight * bag + (1 - bag_weight) * instance loss``; for DSMIL the authors' mean of the
bag-stream and max-instance-stream losses. Validation predictions of every
process are gathered (DDP pads the last batch; duplicates are dropped by bag index) and the
metrics (:mod:`.metrics`) logged as ``val/{name}``.

Callbacks: :class:`BestStateDict` writes the best and last plain state dicts (CLAM's
``s_{k}_checkpoint.pt``) from rank 0; :class:`AttentionImages` logs the attention of a panel of
validation slides to TensorBoard every epoch (:mod:`.attention_maps`); any failure there is
logged as a warning and training goes on.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from wsi_core.io import atomic_path

from ..mil import attention_for_class, create_mil_model
from .attention_maps import SCALE_TEXT, grid_attention_image, patch_size_from_coords, spatial_attention_image
from .config import TrainConfig
from .losses import bag_loss, clam_instance_loss
from .metrics import classification_metrics

__all__ = ["MILModule", "BestStateDict", "AttentionImages", "build_model"]

log = logging.getLogger(__name__)

CLAM_TYPES = ("clam_sb", "clam_mb")


def build_model(cfg: TrainConfig, *, n_classes: int, in_dim: int):
    """The registry's model for the config (``model.kwargs`` passed through)."""
    m = cfg.model
    kw: dict[str, Any] = dict(m.kwargs)
    if m.model_type in CLAM_TYPES:
        kw.setdefault("model_size", m.model_size)
        kw.setdefault("gate", m.gate)
        kw.setdefault("dropout", m.drop_out)
    elif m.model_type == "abmil":
        kw.setdefault("gate", m.gate)
        kw.setdefault("dropout", m.drop_out)
    elif m.model_type == "transmil":
        kw.setdefault("dropout", m.drop_out)
    return create_mil_model(m.model_type, n_classes=n_classes, in_dim=in_dim, **kw)


class MILModule(L.LightningModule):
    """Training of one fold (see the module docstring). ``class_weight``: (C,) or None."""

    def __init__(self, cfg: TrainConfig, *, n_classes: int, in_dim: int, class_weight: Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_classes = n_classes
        self.model = build_model(cfg, n_classes=n_classes, in_dim=in_dim)
        self.model.train()
        self.register_buffer("class_weight", class_weight if class_weight is not None else torch.ones(n_classes),
                             persistent=False)
        self.use_weight = class_weight is not None
        self.use_inst = cfg.model.model_type in CLAM_TYPES and cfg.model.inst_loss is not None
        self._val: list[tuple[int, np.ndarray, int, float]] = []
        self.last_val: dict = {}

    def _loss(self, h: Tensor, y: Tensor) -> tuple[Tensor, Tensor, dict]:
        weight = self.class_weight if self.use_weight else None
        parts: dict = {}
        if self.use_inst:
            logits, A, hp = self.model.forward_with_embedding(h)
            bl = bag_loss(self.model, logits, y, weight=weight)
            il = clam_instance_loss(self.model, A, hp, int(y.item()), B=self.cfg.model.B,
                                    inst_loss=self.cfg.model.inst_loss, subtyping=self.cfg.model.subtyping)
            w = self.cfg.model.bag_weight
            parts = {"bag_loss": bl.detach(), "instance_loss": il.detach()}
            return w * bl + (1 - w) * il, logits, parts
        if self.cfg.model.model_type == "dsmil":
            # the DSMIL authors' loss: the mean of the bag stream's and the max-instance stream's
            scores, bag_logits, _ = self.model.streams(h)
            max_logits = scores.max(dim=0, keepdim=True)[0]
            bl, il = bag_loss(self.model, bag_logits, y, weight=weight), bag_loss(self.model, max_logits, y, weight=weight)
            parts = {"bag_loss": bl.detach(), "instance_loss": il.detach()}
            return 0.5 * bl + 0.5 * il, self.model(h)[0], parts
        logits = self.model(h)[0]
        return bag_loss(self.model, logits, y, weight=weight), logits, parts

    def training_step(self, batch, batch_idx: int) -> Tensor:
        h, y, _ = batch
        loss, _, parts = self._loss(h[0], y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        for k, v in parts.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        return loss

    def _probs(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if getattr(self.model, "multi_label", False) else torch.softmax(logits, dim=1)

    def validation_step(self, batch, batch_idx: int) -> None:
        h, y, i = batch
        loss, logits, _ = self._loss(h[0], y)
        self._val.append((int(i.item()), self._probs(logits)[0].float().cpu().numpy(), int(y.item()), float(loss)))

    def on_validation_epoch_start(self) -> None:
        self._val = []
        self.last_val = {}

    def _gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        idx = torch.tensor([v[0] for v in self._val], dtype=torch.float64)
        probs = torch.tensor(np.stack([v[1] for v in self._val]) if self._val else np.zeros((0, self.n_classes)),
                             dtype=torch.float64)
        y = torch.tensor([v[2] for v in self._val], dtype=torch.float64)
        loss = torch.tensor([v[3] for v in self._val], dtype=torch.float64)
        rows = torch.cat([idx[:, None], y[:, None], loss[:, None], probs], dim=1).to(self.device)
        if self.trainer.world_size > 1:
            rows = self.all_gather(rows).reshape(-1, rows.shape[1])
        rows = rows.cpu().numpy()
        _, first = np.unique(rows[:, 0], return_index=True)
        rows = rows[first]
        return rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 2], rows[:, 3:]

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        _, y, loss, probs = self._gathered()
        m = classification_metrics(y, probs, self.n_classes)
        self.last_val = {"loss": float(loss.mean()) if len(loss) else float("nan"), **m}
        self.log("val_loss", self.last_val["loss"], sync_dist=False)
        auc = m["auc"] if math.isfinite(m["auc"]) else 0.0
        self.log("val_auc", auc, sync_dist=False)
        for k, v in m.items():
            if k != "confusion":
                self.log(f"val/{k}", float(v) if math.isfinite(v) else 0.0, sync_dist=False)
        self.log("val/loss", self.last_val["loss"], sync_dist=False)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], sync_dist=False)

    def configure_optimizers(self):
        o = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        if o.opt == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.reg)
        elif o.opt == "adamw":
            opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.reg)
        else:
            opt = torch.optim.SGD(params, lr=o.lr, momentum=0.9, weight_decay=o.reg)
        if o.scheduler == "none":
            return opt
        if o.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min" if o.monitor == "val_loss" else "max",
                                                               patience=max(1, o.patience // 2))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": o.monitor}}
        warm = o.warmup_epochs if o.scheduler == "warmup_cosine" else 0
        total = max(1, o.max_epochs)

        def factor(epoch: int) -> float:
            if epoch < warm:
                return (epoch + 1) / (warm + 1)
            t = (epoch - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor)}


class BestStateDict(L.Callback):
    """Writes ``best`` (when the monitored validation metric improves) and ``last`` (every
    epoch) as plain ``model.state_dict()`` files from rank 0 (atomic writes); the best epoch and
    its value are kept in ``best_epoch`` / ``best_value``."""

    def __init__(self, best: Path, last: Path, *, monitor: str = "val_loss") -> None:
        self.best, self.last, self.monitor = Path(best), Path(last), monitor
        self.best_value = math.inf if monitor == "val_loss" else -math.inf
        self.best_epoch = -1

    def _save(self, module: MILModule, path: Path) -> None:
        state = {k: v.detach().cpu() for k, v in module.model.state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def on_validation_end(self, trainer: L.Trainer, module: MILModule) -> None:
        # after the module's on_validation_epoch_end has computed this epoch's metrics
        # (Lightning calls callbacks' epoch-end hooks before the module's)
        if trainer.sanity_checking or not module.last_val:
            return
        value = module.last_val["loss" if self.monitor == "val_loss" else "auc"]
        better = value < self.best_value if self.monitor == "val_loss" else value > self.best_value
        if better or self.best_epoch < 0:
            self.best_value, self.best_epoch = value, trainer.current_epoch
            if trainer.is_global_zero:
                self._save(module, self.best)
        if trainer.is_global_zero:
            self._save(module, self.last)


class AttentionImages(L.Callback):
    """Logs ``val/spatial_attention_heatmap/{slide_id}`` (or ``val/grid_attention_heatmap/...``
    when a slide has no coordinates or their count differs from its attention count, with a
    warning naming both counts) every validation epoch for ``panel``: a list of
    ``(slide_id, features (N, D), coords (M, 2) | None, attrs)``. Rank 0 only; never raises."""

    def __init__(self, panel: list[tuple[str, np.ndarray, np.ndarray | None, dict]], *, downsample: int = 32,
                 max_size: int = 1024, cmap: str = "jet") -> None:
        self.panel, self.downsample, self.max_size, self.cmap = panel, downsample, max_size, cmap
        self._warned: set[str] = set()
        self._text_done = False

    def on_validation_epoch_end(self, trainer: L.Trainer, module: MILModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        writer = getattr(trainer.logger, "experiment", None)
        if writer is None or not hasattr(writer, "add_image"):
            return
        was_training = module.model.training
        try:
            if not self._text_done:
                writer.add_text("val/attention_heatmap_scale", SCALE_TEXT.format(cmap=self.cmap), 0)
                self._text_done = True
            for sid, feats, coords, attrs in self.panel:
                self._log_one(writer, module, trainer.current_epoch, sid, feats, coords, attrs)
        except Exception as exc:  # noqa: BLE001 - a drawing failure must never stop training
            log.warning("attention heatmap not logged at epoch %d: %s: %s", trainer.current_epoch,
                        type(exc).__name__, exc)
        finally:
            module.model.train(was_training)

    def _log_one(self, writer, module: MILModule, epoch: int, sid: str, feats: np.ndarray,
                 coords: np.ndarray | None, attrs: dict) -> None:
        try:
            model = module.model
            with torch.inference_mode():
                logits = model.eval()(torch.from_numpy(feats).to(module.device))[0]
            cls = int(logits.argmax())
            att = attention_for_class(model, feats, cls=cls, device=module.device)
            if coords is not None and len(coords) == len(att):
                img, _ = spatial_attention_image(att, coords, patch_size_level0=patch_size_from_coords(coords, attrs),
                                                 downsample=self.downsample, max_size=self.max_size, cmap=self.cmap)
                writer.add_image(f"val/spatial_attention_heatmap/{sid}", img, epoch, dataformats="HWC")
                return
            if sid not in self._warned:
                n_c = "no" if coords is None else str(len(coords))
                log.warning("slide %s: %d attention scores but %s coordinates; logging a grid layout "
                            "(val/grid_attention_heatmap/%s)", sid, len(att), n_c, sid)
                self._warned.add(sid)
            img = grid_attention_image(att, max_size=self.max_size, cmap=self.cmap)
            writer.add_image(f"val/grid_attention_heatmap/{sid}", img, epoch, dataformats="HWC")
        except Exception as exc:  # noqa: BLE001
            log.warning("attention heatmap of slide %s not logged at epoch %d: %s: %s", sid, epoch,
                        type(exc).__name__, exc)
