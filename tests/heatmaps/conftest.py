"""Fixtures for end-to-end runs: CLAM's reference configs re-pointed at ../shared and tmp dirs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from heatmaps.config import parse_config


def reference_config(clam_reference_dir: Path, run: str, out_dir: Path, **overrides) -> "HeatmapConfig":  # noqa: F821
    """CLAM's own reference config ``run`` (real_sb / real_mb_roi) with only its paths changed:
    slides from ../shared/slides, checkpoint and seeded encoder weights from ../shared, outputs in
    ``out_dir``, and the encoder pinned to fp32 (CLAM's precision; our default 'auto' picks bf16 on
    CPUs with native bf16). Every other value is CLAM's."""
    data = yaml.safe_load((clam_reference_dir / run / "configs" / f"{run}.yaml").read_text())
    slides = clam_reference_dir.parent / "slides"
    data["exp_arguments"].update(raw_save_dir=str(out_dir / "heatmap_raw_results"),
                                 production_save_dir=str(out_dir / "heatmap_production_results"),
                                 results_dir=str(out_dir / "results"))
    pl = out_dir / f"{run}.csv"
    pl.write_text((clam_reference_dir / run / "configs" / f"{run}.csv").read_text())
    data["data_arguments"].update(data_dir=str(slides), process_list=str(pl), preset="presets/bwh_biopsy.csv")
    ckpt = "ckpt_clam_sb_seed0.pt" if run == "real_sb" else "ckpt_clam_mb_seed0.pt"
    data["model_arguments"]["ckpt_path"] = str(clam_reference_dir / "checkpoints" / ckpt)
    data["encoder_arguments"]["weights_path"] = str(clam_reference_dir / "checkpoints" / "resnet50_trunc_seed0.safetensors")
    data["encoder_arguments"]["precision"] = "fp32"
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, source=f"{run}.yaml")


@pytest.fixture
def make_reference_config(clam_reference_dir):
    def make(run: str, out_dir: Path, **overrides):
        return reference_config(clam_reference_dir, run, out_dir, **overrides)
    return make


def fast_config(shared: Path, out_dir: Path, rows: list[dict], **overrides) -> "HeatmapConfig":  # noqa: F821
    """A quick real-slide config: the seeded CLAM-SB checkpoint and seeded resnet50_trunc weights
    of ../shared/clam_reference, patches resized to 32 px (a 49x cheaper encoder pass), overlap 0
    (every fine patch reuses a first-pass feature), fp32 (the same features on every CPU). ``rows`` become the process list; slide ids are
    looked up in ../shared/slides and its sub-folders (symlinked into ``out_dir/slides``)."""
    import pandas as pd

    slides = out_dir / "slides"
    slides.mkdir(parents=True, exist_ok=True)
    for sub in ("", "unsupported", "reconstructed/real_geometry"):
        for src in (shared / "slides" / sub).iterdir():
            if src.is_file() or src.suffix == "" and src.is_dir() and any(src.glob("*.dcm")):
                link = slides / src.name
                if not link.exists():
                    link.symlink_to(src)
    pl = out_dir / "process_list.csv"
    pd.DataFrame(rows).to_csv(pl, index=False)
    ref = shared / "clam_reference" / "checkpoints"
    data = {
        "exp_arguments": {"save_exp_code": "FAST", "raw_save_dir": str(out_dir / "raw"), "batch_size": 64,
                          "production_save_dir": str(out_dir / "prod"), "results_dir": str(out_dir / "results")},
        "data_arguments": {"data_dir": str(slides), "process_list": str(pl), "preset": "presets/bwh_biopsy.csv",
                           "slide_ext": ".svs", "label_dict": {"class_a": 0, "class_b": 1}},
        "patching_arguments": {"patch_size": 256, "overlap": 0.0, "patch_level": 0},
        "encoder_arguments": {"model_name": "resnet50_trunc", "target_img_size": 32, "precision": "fp32",
                              "weights_path": str(ref / "resnet50_trunc_seed0.safetensors")},
        "model_arguments": {"ckpt_path": str(ref / "ckpt_clam_sb_seed0.pt"), "model_type": "clam_sb"},
        "heatmap_arguments": {"vis_level": -1, "save_orig": False, "cmap": "jet"},
        "sample_arguments": {"samples": [{"name": "topk", "k": 2, "mode": "topk"}]},
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, source="fast.yaml")


@pytest.fixture
def make_fast_config(shared_dir):
    def make(out_dir: Path, rows: list[dict], **overrides):
        return fast_config(shared_dir, out_dir, rows, **overrides)
    return make
