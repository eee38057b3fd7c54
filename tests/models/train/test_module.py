"""models.train.module: the attention-image callback never stops training."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from models.train.config import TrainConfig
from models.train.module import AttentionImages, MILModule

from .cohort import grid_coords


def test_a_failing_panel_slide_is_a_warning_and_the_others_are_drawn(tmp_path, caplog):
    module = MILModule(TrainConfig(), n_classes=2, in_dim=8)
    rng = np.random.default_rng(0)
    good = rng.standard_normal((6, 8)).astype(np.float32)
    panel = [("wrong_width", rng.standard_normal((6, 5)).astype(np.float32), grid_coords(6), {}),
             ("good", good, grid_coords(6), {}), ("no_coords", good, None, {})]
    writer = SummaryWriter(str(tmp_path))
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=3,
                              logger=SimpleNamespace(experiment=writer))
    module.model.train()
    with caplog.at_level(logging.WARNING):
        AttentionImages(panel).on_validation_epoch_end(trainer, module)
    writer.close()
    assert module.model.training                               # restored after drawing
    assert "attention heatmap of slide wrong_width not logged at epoch 3" in caplog.text
    assert "slide no_coords: 6 attention scores but no coordinates; logging a grid layout" in caplog.text
    ev = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    ev.Reload()
    assert sorted(ev.Tags()["images"]) == ["val/grid_attention_heatmap/no_coords", "val/spatial_attention_heatmap/good"]


def test_learning_rate_schedules():
    from models.train.config import apply_overrides

    cfg = apply_overrides(TrainConfig(), {"optim.scheduler": "warmup_cosine", "optim.warmup_epochs": 2,
                                          "optim.max_epochs": 6, "optim.lr": 1.0})
    sched = MILModule(cfg, n_classes=2, in_dim=8).configure_optimizers()["lr_scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    # warm-up 1/3, 2/3, then a cosine from 1 over the 4 remaining epochs
    assert np.allclose(lrs, [1 / 3, 2 / 3, 1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4))])
    plateau = MILModule(apply_overrides(TrainConfig(), {"optim.scheduler": "plateau"}), n_classes=2, in_dim=8)
    conf = plateau.configure_optimizers()
    assert conf["lr_scheduler"]["monitor"] == "val_loss"
