"""vis_utils: percentiles, score rasterisation, colour maps, blending, image writing and patch
sampling (numpy, OpenCV, matplotlib, PIL, tifffile and wsi_core only; never torch)."""
from __future__ import annotations

from .colorbar import save_colorbar, save_scale_json, scale_attrs
from .heatmap import HeatmapPlan, HeatmapStyle, plan_heatmap, read_canvas, render_heatmap, render_on_canvas
from .images import save_image
from .normalize import ScoreScale, background_mask, fit_scale, fit_score_scale, run_scale
from .percentiles import rank_percentiles, reference_percentiles
from .sampling import SAMPLE_MODES, sample_patches
from .scoremap import render_score_map
from .tiff import TileSource, check_raster_size, pyramid_sizes, write_pyramidal_tiff
from .tiled import TiffHeatmap, band_renderer, render_heatmap_tiff, score_band_renderer

__all__ = [
    "rank_percentiles", "reference_percentiles",
    "HeatmapStyle", "render_heatmap", "read_canvas", "render_on_canvas",
    "SAMPLE_MODES", "sample_patches",
    "save_image",
    "HeatmapPlan", "plan_heatmap",
    "ScoreScale", "fit_scale", "fit_score_scale", "run_scale", "background_mask",
    "save_colorbar", "save_scale_json", "scale_attrs", "render_score_map",
    "TileSource", "check_raster_size", "pyramid_sizes", "write_pyramidal_tiff",
    "TiffHeatmap", "render_heatmap_tiff", "band_renderer", "score_band_renderer",
]
