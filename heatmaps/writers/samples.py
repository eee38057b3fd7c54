"""The sampled-patches writer: CLAM's top-k / bottom-k / range samples of the blockmap as PNGs in
``sampled_patches/label_{label}_pred_{pred}/{name}/``."""
from __future__ import annotations

from pathlib import Path

from vis_utils import sample_patches, save_image

from ..config import HeatmapConfig
from .base import SlideArtifacts, Writer, register_writer


def _enabled(cfg: HeatmapConfig) -> bool:
    return any(spec.sample for spec in cfg.sample_arguments.samples)


def save_samples(a: SlideArtifacts) -> list[Path]:
    """Each enabled sample spec's patches of the blockmap (read at ``patch_level``, ``patch_size``
    px), named with their rank, level-0 ``(x, y)`` and blockmap percentile."""
    p = a.cfg.patching_arguments
    written = []
    for spec in a.cfg.sample_arguments.samples:
        if not spec.sample:
            continue
        idx, pct = sample_patches(a.block_scores, a.block_coords, k=spec.k, mode=spec.mode, seed=spec.seed,
                                  score_start=spec.score_start, score_end=spec.score_end)
        for rank, (i, q) in enumerate(zip(idx, pct)):
            x, y = (int(v) for v in a.block_coords[i])
            patch = a.slide.read_region((x, y), p.patch_level, (p.patch_size, p.patch_size))
            path = a.out.sample_png(a.task.label, a.pred, spec.name, rank, x, y, float(q))
            save_image(patch, path)
            written.append(path)
    return written


register_writer(Writer("samples", "blockmap", _enabled, save_samples))
