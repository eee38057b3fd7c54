"""A run with `encoder_arguments.fully_convolutional` says, before the first slide, that its map
only approximates the exact one (measured fidelity on real weights), and a default run does not."""
from __future__ import annotations

import logging

import pytest

from heatmaps.config import parse_config
from heatmaps.context import RunContext
from models import create_mil_model


@pytest.mark.parametrize("fully_conv", [True, False])
def test_prepare_warns_only_for_fully_convolutional(make_fast_config, tmp_path, caplog, fully_conv):
    cfg = make_fast_config(tmp_path, [{"slide_id": "CMU-1-Small-Region"}])
    data = cfg.model_dump()
    data["encoder_arguments"]["fully_convolutional"] = fully_conv
    ctx = RunContext(cfg=parse_config(data, source="fc.yaml"), class_names={0: "a", 1: "b"}, progress=False,
                     model=create_mil_model("clam_sb", n_classes=2, in_dim=1024).eval())
    with caplog.at_level(logging.WARNING, logger="heatmaps.context"):
        ctx.prepare(encoder_required=True)
    warned = [r.getMessage() for r in caplog.records if "fully_convolutional" in r.getMessage()]
    if fully_conv:
        assert len(warned) == 1 and "Spearman 0.69-0.77" in warned[0] and "set it to false" in warned[0]
    else:
        assert warned == []
