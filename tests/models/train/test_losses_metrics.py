"""models.train.losses (class weights, CLAM's instance loss) and models.train.metrics."""
from __future__ import annotations

import numpy as np
import torch

from models import create_mil_model
from models.train.losses import bag_loss, class_weights, clam_instance_loss
from models.train.metrics import classification_metrics, mean_std


def test_class_weights_formula() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert torch.allclose(w, torch.tensor([4 / 9, 4 / 3, 0.0]))
    logits, y = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([1])
    assert torch.isclose(bag_loss(torch.nn.Module(), logits, y, weight=w),
                         torch.nn.functional.cross_entropy(logits, y) * 4 / 3)


def test_clam_instance_loss_uses_the_top_and_bottom_instances() -> None:
    torch.manual_seed(0)
    model = create_mil_model("clam_sb", n_classes=2, in_dim=16)
    h = torch.randn(20, 16)
    logits, A, hp = model.forward_with_embedding(h)
    assert torch.allclose(logits, model(h)[0])
    loss = clam_instance_loss(model, A, hp, 1, B=4, inst_loss="ce")
    top, bottom = torch.topk(A[0], 4).indices, torch.topk(-A[0], 4).indices
    want = torch.nn.functional.cross_entropy(model.instance_classifiers[1](hp[torch.cat([top, bottom])]),
                                             torch.tensor([1] * 4 + [0] * 4))
    assert torch.isclose(loss, want)
    assert float(clam_instance_loss(model, A[:, :1], hp[:1], 1, B=4)) == 0.0   # N // 2 = 0 instances
    mb = create_mil_model("clam_mb", n_classes=3, in_dim=16)
    _, A, hp = mb.forward_with_embedding(h)
    assert clam_instance_loss(mb, A, hp, 2, B=2, inst_loss="svm", subtyping=True).item() > 0


def test_metrics() -> None:
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics(y, p, 2)
    assert m["acc"] == 0.6 and m["confusion"].tolist() == [[1, 1], [1, 2]]
    assert np.isclose(m["bacc"], (1 / 2 + 2 / 3) / 2) and np.isclose(m["auc"], 5 / 6)
    assert np.isclose(m["acc_class_1"], 2 / 3)
    m3 = classification_metrics(np.array([0, 1, 2]), np.eye(3), 3)
    assert m3["auc"] == 1.0 and m3["f1"] == 1.0
    assert mean_std([1.0, 3.0, float("nan")]) == (2.0, np.sqrt(2.0))
