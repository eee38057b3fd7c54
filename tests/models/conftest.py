"""Fixtures for the models tests: two torch threads (CI has 2 cores), real-data paths."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

REF_SB = "real_sb/heatmap_raw_results/REAL_SB"
REF_MB = "real_mb_roi/heatmap_raw_results/REAL_MB_ROI"


@pytest.fixture(scope="session")
def demo_ckpt(mil_dir: Path) -> Path:
    """The official CLAM heatmap-demo checkpoint (legacy pickle, CUDA tensors)."""
    return mil_dir / "clam_demo" / "s_0_checkpoint.pt"


@pytest.fixture(scope="session")
def ref_ckpts(clam_reference_dir: Path) -> Path:
    """Folder of the CLAM reference run's seeded checkpoints and encoder weights."""
    return clam_reference_dir / "checkpoints"


@pytest.fixture(scope="session")
def cmu_sb_dir(clam_reference_dir: Path) -> Path:
    """Raw results of the reference CLAM-SB run for CMU-1-Small-Region."""
    return clam_reference_dir / REF_SB / "class_a" / "CMU-1-Small-Region"
