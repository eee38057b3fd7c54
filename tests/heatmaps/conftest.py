"""Fixtures for end-to-end runs: CLAM's reference configs re-pointed at ../shared and tmp dirs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from heatmaps.config import parse_config


def reference_config(clam_reference_dir: Path, run: str, out_dir: Path, **overrides) -> "HeatmapConfig":  # noqa: F821
    """CLAM's own reference config ``run`` (real_sb / real_mb_roi) with only its paths changed:
    slides from ../shared/slides, checkpoint and seeded encoder weights from ../shared, outputs in
    ``out_dir``. Every other value is CLAM's."""
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
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, source=f"{run}.yaml")


@pytest.fixture
def make_reference_config(clam_reference_dir):
    def make(run: str, out_dir: Path, **overrides):
        return reference_config(clam_reference_dir, run, out_dir, **overrides)
    return make
