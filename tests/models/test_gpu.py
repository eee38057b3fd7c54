"""CUDA paths (skipped without a GPU). Not run on the development machine (no GPU there)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from models import create_encoder, extract_features, load_mil_checkpoint, predict_bag

pytestmark = [pytest.mark.gpu, pytest.mark.shared,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_demo_model_on_cuda_matches_cpu(mil_dir: Path, demo_ckpt: Path) -> None:
    with h5py.File(mil_dir / "clam_demo_parisa" / "C3L-01663-21.h5", "r") as f:
        feats = f["features"][:]
    cpu = predict_bag(load_mil_checkpoint(demo_ckpt, model_type="clam_sb"), feats)
    gpu = predict_bag(load_mil_checkpoint(demo_ckpt, model_type="clam_sb", device="cuda"), feats,
                      device="cuda")
    np.testing.assert_allclose(gpu.probs, cpu.probs, atol=1e-3)  # TF32 matmuls allowed
    np.testing.assert_allclose(gpu.attention, cpu.attention, atol=1e-2)


def test_extract_on_cuda_matches_cpu(slides_dir: Path, ref_ckpts: Path, cmu_sb_dir: Path) -> None:
    enc = create_encoder(weights_path=ref_ckpts / "resnet50_trunc_seed0.safetensors")
    with h5py.File(cmu_sb_dir / "CMU-1-Small-Region.h5", "r") as f:
        coords, ref = f["coords"][:8], f["features"][:8]
    out = extract_features(slides_dir / "CMU-1-Small-Region.svs", coords, patch_level=0,
                           patch_size=256, encoder=enc, batch_size=4, num_workers=0,
                           device="cuda", progress=False)
    np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2)  # cuDNN may use TF32
