"""wsi_core: slide reading, tissue segmentation, patch grids and file I/O (numpy, OpenSlide,
OpenCV, h5py only; never torch)."""
from __future__ import annotations

from .errors import (
    CheckpointError,
    ConfigError,
    FeatureFileError,
    NoTissueError,
    RoiError,
    SlideOpenError,
    WsiHeatmapsError,
)
from .io import atomic_path, read_h5, write_h5
from .slide import Slide, open_slide
from .tissue import (
    SegmentationParams,
    TissueContours,
    draw_segmentation,
    load_clam_mask_pkl,
    load_contours_geojson,
    save_contours_geojson,
    segment_tissue,
)
from .patching import dense_step, patch_grid, points_in_contour

__all__ = [
    "WsiHeatmapsError", "SlideOpenError", "NoTissueError", "RoiError", "FeatureFileError",
    "CheckpointError", "ConfigError",
    "atomic_path", "write_h5", "read_h5",
    "Slide", "open_slide",
    "SegmentationParams", "TissueContours", "segment_tissue", "save_contours_geojson",
    "load_contours_geojson", "load_clam_mask_pkl", "draw_segmentation",
    "points_in_contour", "patch_grid", "dense_step",
]
