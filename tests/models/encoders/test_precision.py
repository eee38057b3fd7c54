"""models.encoders.precision: names, aliases, defaults and autocast contexts."""
from __future__ import annotations

import contextlib

import pytest
import torch

from models.encoders import autocast_context, create_encoder, default_precision, normalise_precision
from wsi_core.errors import ConfigError


def test_precision_names_and_contexts() -> None:
    assert [normalise_precision(p) for p in ("fp32", "BF16", "bfloat16", "float16", "half")] == \
        ["fp32", "bf16", "bf16", "fp16", "fp16"]
    for bad in ("int8", "fp64", ""):
        with pytest.raises(ConfigError) as info:
            normalise_precision(bad)
        assert str(info.value) == f"encoder_arguments.precision '{bad}' is not supported; use one of fp32, bf16, fp16"
    with pytest.raises(ConfigError, match="encoder_arguments.precision 'int8'"):
        create_encoder("resnet50_trunc", precision="int8")  # checked before anything is built
    assert (default_precision("cpu"), default_precision("cuda"), default_precision(torch.device("cuda:1"))) == \
        ("fp32", "bf16", "bf16")
    assert isinstance(autocast_context("cpu", "fp32"), contextlib.nullcontext)
    assert isinstance(autocast_context(torch.device("cpu"), None), contextlib.nullcontext)
    ctx = autocast_context("cpu", "fp16")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.float16 and ctx.device == "cpu"
