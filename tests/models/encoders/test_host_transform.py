"""CPU batches: the transform's PIL steps per patch and its tensor steps per batch, bit-identical."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.encoders import eval_transform
from models.encoders.transforms import host_batch_transform


@pytest.mark.parametrize("size", [224, -1])
def test_host_batch_transform_equals_the_per_patch_compose(size):
    transform = eval_transform(size)
    host = host_batch_transform(transform)
    rng = np.random.default_rng(0)
    patches = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(4)]
    want = torch.stack([transform(Image.fromarray(p)) for p in patches])
    got = host.batch(np.stack([host.pil(Image.fromarray(p)) for p in patches]))
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=torch.channels_last)      # a channels-last encoder takes it as is


def test_an_ad_hoc_transform_has_no_host_batch_form():
    assert host_batch_transform(lambda img: img) is None
