"""A synthetic training cohort: real-width bags with a planted class signal.

Each patient has two slides of its class; a slide is a bag of ``n_inst`` 1024-d features
(standard normal) at grid coordinates (level-0 px, 256-px patches); a positive slide has
``n_pos`` instances shifted by ``signal`` along the first 32 feature dimensions (the planted
instances), a negative slide none.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.pt_features import write_pt_features
from wsi_core.formats import write_features_h5, write_trident_features_h5

DIM = 1024
PATCH = 256


def grid_coords(n: int, cols: int = 8) -> np.ndarray:
    i = np.arange(n)
    return np.stack([(i % cols) * PATCH, (i // cols) * PATCH], axis=1).astype(np.int64)


def make_cohort(root: Path, *, n_patients: int = 24, n_inst: int = 32, n_pos: int = 4, signal: float = 1.5,
                layout: str = "clam", seed: int = 0, dim: int = DIM) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Write the cohort under ``root``; returns ``(dataset csv, features dir, planted)`` where
    ``planted[slide_id]`` is the (n_pos,) indices of the planted instances (positive slides)."""
    rng = np.random.default_rng(seed)
    feats_dir = root / ("features" if layout == "clam" else "features_synthetic")
    rows, planted = [], {}
    for p in range(n_patients):
        label = p % 2
        for s in range(2):
            sid = f"slide_{p:03d}_{s}"
            h = rng.standard_normal((n_inst, dim)).astype(np.float32)
            if label:
                idx = np.sort(rng.choice(n_inst, n_pos, replace=False))
                h[idx, :32] += signal
                planted[sid] = idx
            coords = grid_coords(n_inst)
            if layout == "clam":
                write_features_h5(feats_dir / "h5_files" / f"{sid}.h5", h, coords, attrs={"encoder": "synthetic"})
                write_pt_features(feats_dir / "pt_files" / f"{sid}.pt", h)
            else:
                write_trident_features_h5(feats_dir / f"{sid}.h5", h, coords, patch_size=PATCH, patch_size_level0=PATCH,
                                          level0_magnification=20.0, target_magnification=20.0)
            rows.append({"case_id": f"patient_{p:03d}", "slide_id": sid, "label": ["normal", "tumor"][label]})
    csv = root / "dataset.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, feats_dir, planted
