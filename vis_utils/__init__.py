"""vis_utils: percentiles, score rasterisation, colour maps, blending, image writing and patch
sampling (numpy, OpenCV, matplotlib, PIL, tifffile and wsi_core only; never torch)."""
from __future__ import annotations

from .heatmap import HeatmapStyle, read_canvas, render_heatmap, render_on_canvas
from .images import save_image
from .percentiles import rank_percentiles, reference_percentiles
from .sampling import SAMPLE_MODES, sample_patches

__all__ = [
    "rank_percentiles", "reference_percentiles",
    "HeatmapStyle", "render_heatmap", "read_canvas", "render_on_canvas",
    "SAMPLE_MODES", "sample_patches",
    "save_image",
]
