"""`encoder_arguments.precision: auto` (the default) through the run context: the resolved
precision reaches the encoder, the channels-last flag, the feature pass and the H5 attributes."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import heatmaps.context as context_mod
import models.encoders.precision as precision_mod
from heatmaps.config import parse_config
from heatmaps.context import RunContext, encode
from models import create_mil_model

ZEN4 = frozenset("fpu avx2 avx512f avx512_vnni avx512_bf16".split())
ICE_LAKE = frozenset("fpu avx2 avx512f avx512_vnni".split())


def _ctx(make_fast_config, tmp_path, **encoder_arguments) -> RunContext:
    cfg = make_fast_config(tmp_path, [{"slide_id": "CMU-1-Small-Region"}])
    data = cfg.model_dump()
    data["encoder_arguments"].pop("precision")          # the default, as a user's YAML leaves it
    data["encoder_arguments"].update(encoder_arguments)
    cfg = parse_config(data, source="auto.yaml")
    model = create_mil_model("clam_sb", n_classes=2, in_dim=1024).eval()
    return RunContext(cfg=cfg, model=model, class_names={0: "a", 1: "b"}, progress=False)


@pytest.mark.parametrize(("flags", "want"), [(ZEN4, "bf16"), (ICE_LAKE, "fp32")])
def test_auto_is_the_default_and_is_resolved_for_this_cpu(make_fast_config, tmp_path, monkeypatch, flags, want):
    monkeypatch.setattr(precision_mod, "_this_cpu_flags", lambda: flags)
    ctx = _ctx(make_fast_config, tmp_path)
    assert ctx.cfg.encoder_arguments.precision == "auto"
    assert (ctx.precision, ctx.encoder().precision, ctx.encoder_attrs()["precision"]) == (want, want, want)
    assert ctx.channels_last is (want == "bf16")
    seen = {}
    monkeypatch.setattr(context_mod, "extract_features_dense",
                        lambda *a, **kw: seen.update(kw) or np.zeros((1, 1024), np.float32))
    encode(ctx, SimpleNamespace(path="s.svs"), np.array([[0, 0]]), use_cache=False)
    assert (seen["precision"], seen["channels_last"]) == (want, want == "bf16")


def test_fp32_pinned_stays_fp32_on_a_bf16_cpu(make_fast_config, tmp_path, monkeypatch):
    monkeypatch.setattr(precision_mod, "_this_cpu_flags", lambda: ZEN4)
    ctx = _ctx(make_fast_config, tmp_path, precision="fp32")
    assert (ctx.precision, ctx.channels_last, ctx.encoder_attrs()["precision"]) == ("fp32", False, "fp32")
