"""The trainer on a CUDA device with bf16 mixed precision (skipped without CUDA): every model type
learns the synthetic cohort, and the checkpoint it writes loads on the CPU."""
from __future__ import annotations

import pytest
import torch

from models.checkpoints import load_mil_checkpoint
from models.mil import list_mil_models
from models.train.run import output_dir, train_run

from .cohort import make_cohort
from .test_trainer import _cfg

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort"), n_patients=24, n_inst=16, signal=3.0)


@pytest.mark.parametrize("model_type", list_mil_models())
def test_every_model_type_learns_on_cuda_in_bf16_mixed(cohort, tmp_path, model_type):
    csv, feats, _ = cohort
    cfg = _cfg(csv, feats, tmp_path, model_type, **{"logging.log_data": False, "run.accelerator": "gpu",
                                                    "optim.precision": "bf16-mixed"})
    [fold] = train_run(cfg)
    assert fold.test["auc"] >= 0.95, fold.test
    model = load_mil_checkpoint(output_dir(cfg) / "s_0_checkpoint.pt", model_type=model_type, n_classes=2,
                                embed_dim=1024, model_kwargs=None)
    assert model.in_dim == 1024 and next(model.parameters()).device.type == "cpu"
