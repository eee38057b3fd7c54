"""models.train: the training loop, its bags and losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import create_mil_model, predict_bag
from models.train import attention_supervision_loss, bag_loss, deterministic_torch, make_bags, train_mil


def _toy(seed: int = 0, n: int = 40, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    share = (rng.random(n) > 0.75).astype(np.float64)
    feats = (rng.standard_normal((n, d)) + 2.0 * share[:, None]).astype(np.float32)
    return feats, share


def _clam(d: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_mil_model("clam_sb", n_classes=2, in_dim=d, model_size="small", gate=True, dropout=0.0)


def test_make_bags() -> None:
    positive = np.array([0, 1, 0, 0, 1, 0, 0, 0], bool)
    a = make_bags(positive, n_bags=3, rng=np.random.default_rng(0))
    b = make_bags(positive, n_bags=3, rng=np.random.default_rng(0))
    assert len(a) == 7 and [y for _, y in a] == [1, 1, 0, 1, 0, 1, 0]
    assert all(np.array_equal(i, j) for (i, _), (j, _) in zip(a, b))
    assert np.array_equal(a[0][0], np.arange(8))
    for idx, y in a:
        assert np.all(np.diff(idx) > 0) and bool(positive[idx].any()) == bool(y)
    with pytest.raises(ValueError, match="positive and negative instances, got 0 and 8"):
        make_bags(np.zeros(8, bool), n_bags=1, rng=np.random.default_rng(0))


def test_train_mil_learns_and_is_deterministic() -> None:
    feats, share = _toy()
    h = torch.from_numpy(feats)
    bags = make_bags(share > 0.5, n_bags=4, rng=np.random.default_rng(0))
    kw = dict(steps=30, lr=1e-3, seed=0)
    runs = [train_mil(_clam(), [h[i] for i, _ in bags], [y for _, y in bags], **kw).state_dict() for _ in range(2)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    model = _clam()
    model.load_state_dict(runs[0])
    assert not model.training
    neg = np.flatnonzero(share < 0.5)
    assert predict_bag(model, feats).pred == 1 and predict_bag(model, feats[neg]).pred == 0


def test_train_mil_restores_threads_and_determinism() -> None:
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with deterministic_torch(1):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    feats, _ = _toy()
    train_mil(_clam(), [feats], [1], steps=1)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, det)


def test_aux_loss_supervises_the_attention() -> None:
    feats, share = _toy()
    h, target = torch.from_numpy(feats), torch.from_numpy(share.astype(np.float32))
    model = train_mil(_clam(), [h], [1], steps=60, lr=1e-3,
                      aux_loss=lambda m: attention_supervision_loss(m, h, target))
    att = predict_bag(model, feats).attention[0]
    assert att[share > 0.5].min() > att[share < 0.5].max()


def test_bad_inputs() -> None:
    feats, _ = _toy()
    model = _clam()
    with pytest.raises(ValueError, match="as many labels as bags"):
        train_mil(model, [feats], [0, 1], steps=1)
    with pytest.raises(ValueError, match=r"bag 0 has shape \(40, 16\); bags must be \(n >= 1, 8\)"):
        train_mil(_clam(8), [feats], [1], steps=1)
    with pytest.raises(ValueError, match=r"bag labels must be in 0..1, got \[2\]"):
        train_mil(model, [feats], [2], steps=1)


def test_bag_loss_multi_label() -> None:
    logits, target = torch.tensor([[2.0, -1.0]]), torch.tensor([0])
    single = torch.nn.Module()
    multi = torch.nn.Module()
    multi.multi_label = True
    assert torch.isclose(bag_loss(single, logits, target), torch.nn.functional.cross_entropy(logits, target))
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0.0]]))
    assert torch.isclose(bag_loss(multi, logits, target), want)
