"""A cohort of tiny synthetic slides with pre-extracted features and a small seeded CLAM-SB
checkpoint: a whole config runs in about a second per slide on one CPU core, no encoder, no
download. Used by the worker tests and ``benchmarks/bench_workers.py``."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

SIZE = 512          # level-0 px (the synthetic slide's minimum)
PATCH = 64          # level-0 px
DIM = 32            # feature width


def make_tiny_cohort(root: Path, n_slides: int = 8, *, seed: int = 0, size: int = SIZE) -> Path:
    """Write ``n_slides`` synthetic slides, their CLAM feature files (a ``PATCH`` px grid over the
    whole slide, ``DIM``-d seeded features), a CLAM-SB small checkpoint, a process list and a
    config into ``root``; returns the config's path. Outputs go under ``root/out``."""
    import torch

    from heatmaps.demo import make_demo_slide
    from models import create_mil_model

    root.mkdir(parents=True, exist_ok=True)
    slides, feats = root / "slides", root / "features"
    slides.mkdir(exist_ok=True)
    feats.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size:PATCH, 0:size:PATCH]
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)
    rows = []
    for k in range(n_slides):
        sid = f"tiny_{k:02d}"
        make_demo_slide(slides / f"{sid}.tiff", seed=100 + k, size=(size, size))
        with h5py.File(feats / f"{sid}.h5", "w") as f:
            f["features"] = rng.normal(size=(len(coords), DIM)).astype(np.float32)
            f["coords"] = coords
        rows.append({"slide_id": sid, "label": ["normal", "lesion"][k % 2], "features_path": str(feats / f"{sid}.h5"),
                     "a_t": 0.1})
    pl = root / "process_list.csv"
    pd.DataFrame(rows).to_csv(pl, index=False)
    torch.manual_seed(seed)
    model = create_mil_model("clam_sb", n_classes=2, in_dim=DIM, model_size="small", gate=True, dropout=0.0)
    ckpt = root / "clam_sb_tiny.pt"
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, ckpt)
    out = root / "out"
    config = {
        "exp_arguments": {"n_classes": 2, "save_exp_code": "TINY", "raw_save_dir": str(out / "raw"),
                          "production_save_dir": str(out / "prod"), "results_dir": str(out / "results"),
                          "batch_size": 64},
        "data_arguments": {"data_dir": str(slides), "process_list": str(pl), "preset": "presets/bwh_biopsy.csv",
                           "slide_ext": ".tiff", "label_dict": {"normal": 0, "lesion": 1}},
        "patching_arguments": {"patch_size": PATCH, "overlap": 0.0, "patch_level": 0},
        "encoder_arguments": {"model_name": "auto"},
        "model_arguments": {"ckpt_path": str(ckpt), "model_type": "clam_sb", "model_size": "small", "embed_dim": DIM},
        "heatmap_arguments": {"vis_level": 1, "save_orig": False, "save_ext": "png", "calc_heatmap": True},
        "sample_arguments": {"samples": [{"name": "topk", "sample": True, "seed": 1, "k": 2, "mode": "topk"}]},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def variant(config: Path, name: str, **sections) -> Path:
    """A copy of ``config`` whose outputs go to ``{config dir}/{name}`` (and whose sections are
    updated with ``sections``); returns its path."""
    data = yaml.safe_load(config.read_text())
    out = config.parent / name
    data["exp_arguments"].update(raw_save_dir=str(out / "raw"), production_save_dir=str(out / "prod"),
                                 results_dir=str(out / "results"))
    for section, values in sections.items():
        data[section].update(values)
    path = config.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def output_files(out: Path) -> dict[str, bytes]:
    """Every output file under ``out`` (relative path -> bytes), without the per-slide states
    and run records, which name hosts, pids and times."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.endswith("_state.json") and p.parent.name != "runs"}
