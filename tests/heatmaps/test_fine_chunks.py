"""The fine pass in chunks of whole grid rows: memory bounded by a chunk of features, not by the
patch count (95 % overlap), with the same scores as one pass over all patches."""
from __future__ import annotations

import numpy as np
import pytest

import heatmaps.pipeline as pipeline
from heatmaps.pipeline import fine_pass_chunks


def test_chunks_are_runs_of_rows_within_the_byte_budget(monkeypatch):
    xs, ys = np.meshgrid(np.arange(0, 130, 13), np.arange(0, 65, 13))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)[::-1].copy()      # 50 patches, rows reversed
    monkeypatch.setattr(pipeline, "FINE_CHUNK_BYTES", 4 * 8 * 20)    # 20 patches of 8-d features
    chunks = fine_pass_chunks(coords, dim=8, instance_independent=True)
    assert [len(c) for c in chunks] == [20, 20, 10]
    assert sorted(np.concatenate(chunks).tolist()) == list(range(50))  # every patch exactly once
    first = coords[chunks[0]]
    assert first[:, 1].max() <= coords[chunks[1]][:, 1].min()           # row by row, top first
    assert (first[:10, 1] == 0).all() and np.array_equal(first[:10, 0], np.arange(0, 130, 13))
    # a bag-level model (TransMIL, DSMIL) needs the whole bag; a small bag is one chunk
    assert [len(c) for c in fine_pass_chunks(coords, dim=8, instance_independent=False)] == [50]
    assert [len(c) for c in fine_pass_chunks(coords[:20], dim=8, instance_independent=True)] == [20]


@pytest.mark.slow
def test_chunked_fine_pass_gives_the_same_scores(make_fast_config, tmp_path, monkeypatch):
    """The fine scores of 48 real patches (CMU-1-Small-Region, seeded encoder at 32 px, seeded
    CLAM-SB) in chunks of at most 10 patches equal those of one pass over all of them."""
    from types import SimpleNamespace

    from heatmaps.bags import Bag
    from heatmaps.context import RunContext
    from models import load_mil_checkpoint
    from wsi_core import open_slide
    from wsi_core.formats import FeatureBag

    cfg = make_fast_config(tmp_path, [{"slide_id": "CMU-1-Small-Region"}])
    model = load_mil_checkpoint(cfg.model_arguments.ckpt_path, model_type="clam_sb")
    ctx = RunContext(cfg=cfg, model=model, class_names={0: "a", 1: "b"}, progress=False)
    xs, ys = np.meshgrid(np.arange(900, 900 + 8 * 64, 64), np.arange(1200, 1200 + 6 * 64, 64))
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)
    bag = Bag(FeatureBag(np.zeros((1, 1024), np.float32), np.array([[0, 0]]), "none"), "extracted", True)
    calls = []
    real = pipeline.fine_pass_features
    monkeypatch.setattr(pipeline, "fine_pass_features", lambda c, s, xy, b: calls.append(len(xy)) or real(c, s, xy, b))
    with open_slide(tmp_path / "slides" / "CMU-1-Small-Region.svs") as slide:
        art = SimpleNamespace(slide=slide, pred=1)
        whole = pipeline._fine_scores(ctx, art, bag, coords)
        monkeypatch.setattr(pipeline, "FINE_CHUNK_BYTES", 4 * 1024 * 10)
        chunked = pipeline._fine_scores(ctx, art, bag, coords)
    assert calls == [48, 10, 10, 10, 10, 8]
    np.testing.assert_allclose(chunked[0], whole[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=0, atol=1e-5)
    assert np.ptp(whole[0]) > 0 and whole[1].shape == (48, 2)
