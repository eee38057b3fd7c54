"""Tissue segmentation (CLAM ``WholeSlideImage.segmentTissue`` behaviour) and contour files.

Contours are OpenCV contours in **level-0 px**: ``(K, 1, 2)`` int32 arrays of ``(x, y)`` points.
:class:`TissueContours` holds the tissue contours and, per tissue contour, its hole contours.
They are stored as GeoJSON (:func:`save_contours_geojson`) and can be read back from CLAM's
``<slide_id>_mask.pkl`` with a restricted unpickler (:func:`load_clam_mask_pkl`).

(Just over 400 lines: one concept - CLAM's tissue contours, their making, their two file formats
and their preview - kept together so the contour conventions are read in one place.)
"""
from __future__ import annotations

import json
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import ConfigError, FeatureFileError, NoTissueError
from .io import atomic_path
from .levels import resolve_level
from .slide import Slide

__all__ = [
    "SegmentationParams",
    "TissueContours",
    "segment_tissue",
    "save_contours_geojson",
    "load_contours_geojson",
    "load_clam_mask_pkl",
    "draw_segmentation",
    "contour_files",
    "RESEGMENT_PARAMS",
    "contours_for_scores",
]


@dataclass(frozen=True)
class SegmentationParams:
    """CLAM segmentation parameters (CLAM defaults).

    seg_level: pyramid level segmented; -1 -> ``slide.best_level_for_downsample(32)``.
    sthresh / sthresh_up: binary threshold on the median-blurred HSV saturation (0-255).
    mthresh: median blur kernel size (odd px at seg_level). close: closing kernel (px, 0 = off).
    use_otsu: Otsu threshold instead of ``sthresh``.
    keep_ids / exclude_ids: contour indices to keep / drop after filtering.
    a_t / a_h: minimum tissue / hole area in units of a ``ref_patch_size``² level-0 patch.
    max_n_holes: at most this many (largest) holes per tissue contour.
    a_t_hints: ``(label, a_t)`` pairs the caller can offer the user (e.g. ``("preset bwh_biopsy",
        1.0)``); when ``a_t`` rejects every piece, the :class:`NoTissueError` names those whose
        ``a_t`` would keep the largest one. Not a segmentation parameter (ignored in comparisons).
    """

    seg_level: int = -1
    sthresh: int = 15
    sthresh_up: int = 255
    mthresh: int = 11
    close: int = 2
    use_otsu: bool = False
    keep_ids: tuple[int, ...] = ()
    exclude_ids: tuple[int, ...] = ()
    a_t: float = 50.0
    a_h: float = 8.0
    max_n_holes: int = 10
    ref_patch_size: int = 512
    a_t_hints: tuple[tuple[str, float], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mthresh < 1 or self.mthresh % 2 == 0:
            raise ConfigError(
                f"mthresh={self.mthresh}: the median blur size must be a positive odd integer "
                "(e.g. 7 or 11); fix mthresh in the preset / process list"
            )
        if self.close < 0 or self.max_n_holes < 0 or self.ref_patch_size <= 0:
            raise ConfigError(
                f"close={self.close}, max_n_holes={self.max_n_holes}, ref_patch_size="
                f"{self.ref_patch_size}: must be >= 0 (ref_patch_size > 0); fix the preset"
            )


@dataclass
class TissueContours:
    """Tissue contours of one slide, level-0 px.

    tissue: each ``(K, 1, 2)`` int32 ``(x, y)``.
    holes: ``holes[i]`` = hole contours of ``tissue[i]``, each ``(K, 1, 2)`` int32.
    """

    tissue: list[np.ndarray] = field(default_factory=list)
    holes: list[list[np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.holes) != len(self.tissue):
            raise ValueError(
                f"TissueContours: {len(self.tissue)} tissue contours but {len(self.holes)} hole lists"
            )

    def __len__(self) -> int:
        return len(self.tissue)


# --------------------------------------------------------------------------- segmentation


STRIP_PX = 1 << 22      # the segmentation level is read in strips of ~4 Mpx (integer downsamples)


def _saturation(slide: Slide, level: int) -> np.ndarray:
    """(h, w) uint8 HSV saturation of the whole ``level`` (the only channel CLAM thresholds).

    At an integer level downsample the level is read in strips of ``STRIP_PX`` (each strip's
    level-0 origin lands on the level's own pixel grid, so the pixels are those of one read) and
    only the saturation is kept: a 100,000 x 80,000 slide's 31 Mpx segmentation level then peaks
    at ~80 MiB instead of ~500 MiB (RGBA, RGB and HSV copies of the whole level)."""
    w, h = slide.level_dimensions[level]
    dsy = float(slide.level_downsamples[level][1])
    rows = h if not dsy.is_integer() else max(1, STRIP_PX // max(w, 1))
    sat = np.empty((h, w), np.uint8)
    for y in range(0, h, rows):
        n = min(rows, h - y)
        rgb = slide.read_region((0, int(y * dsy)), level, (w, n))
        sat[y:y + n] = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[:, :, 1]
    return sat


def _tissue_mask(sat: np.ndarray, p: SegmentationParams) -> np.ndarray:
    """(h, w) uint8 binary mask (0 / sthresh_up) from the HSV saturation, CLAM-style."""
    med = cv2.medianBlur(np.ascontiguousarray(sat), int(p.mthresh))
    if p.use_otsu:
        _, mask = cv2.threshold(med, 0, p.sthresh_up, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
    else:
        _, mask = cv2.threshold(med, p.sthresh, p.sthresh_up, cv2.THRESH_BINARY)
    if p.close > 0:
        kernel = np.ones((p.close, p.close), np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return mask


def _filter_contours(
    contours: list[np.ndarray], hierarchy: np.ndarray, a_t: float, a_h: float, max_n_holes: int
) -> tuple[list[np.ndarray], list[list[np.ndarray]], float]:
    """Outer contours with net area > a_t, and for each its <= max_n_holes largest holes > a_h;
    also the largest net area that ``a_t`` rejected (0.0 when none was).

    hierarchy: (n, 2) columns (first child, parent). Areas in seg_level px².
    """
    tissue: list[np.ndarray] = []
    holes: list[list[np.ndarray]] = []
    rejected = 0.0
    parents = hierarchy[:, 1]
    for idx in np.flatnonzero(parents == -1):
        hole_ids = np.flatnonzero(parents == idx)
        area = cv2.contourArea(contours[idx]) - float(
            np.sum([cv2.contourArea(contours[h]) for h in hole_ids])
        )
        if area == 0 or not a_t < area:
            rejected = max(rejected, float(area))
            continue
        tissue.append(contours[idx])
        cand = sorted((contours[h] for h in hole_ids), key=cv2.contourArea, reverse=True)
        holes.append([h for h in cand[:max_n_holes] if cv2.contourArea(h) > a_h])
    return tissue, holes, rejected


def _rejected_hint(rejected_a_t: float, params: SegmentationParams) -> str:
    """What the a_t filter threw away, in ``a_t`` units, and which offered a_t would keep it."""
    if rejected_a_t <= 0:
        return "; no piece passed sthresh at all"
    q = 10.0 ** (math.floor(math.log10(rejected_a_t)) - 2)     # 3 significant digits, rounded down:
    x = f"{math.floor(rejected_a_t / q) * q:.3g}"               # "an a_t below x" must keep it
    keep = [f"{label} (a_t {a_t:g})" for label, a_t in params.a_t_hints if a_t < rejected_a_t]
    named = f", e.g. {', '.join(keep)}" if keep else ""
    return (f"; the largest piece had area {x} (a_t units: {params.ref_patch_size}² level-0 px) and "
            f"a_t={params.a_t:g} rejected it: an a_t below {x} keeps it{named}")


def _scale(cont: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Scale a contour's (x, y) by per-axis factors, truncating to int32 (as CLAM)."""
    return np.array(cont * np.asarray(scale, dtype=np.float64), dtype=np.int32)


def segment_tissue(slide: Slide, params: SegmentationParams) -> TissueContours:
    """Segment tissue like CLAM ``segmentTissue``; contours in level-0 px.

    Reads the whole ``seg_level`` (RGB, in strips: :func:`_saturation`), thresholds the median-blurred HSV saturation (binary at
    ``sthresh`` or Otsu), closes with a ``close x close`` kernel, finds contours (RETR_CCOMP),
    keeps outer contours whose area minus their holes' areas is > ``a_t`` (and != 0) and their
    ``max_n_holes`` largest holes with area > ``a_h`` (areas scaled by
    ``int(ref_patch_size**2 / (dsx * dsy))``), scales to level 0 with int32 truncation and
    applies ``keep_ids`` / ``exclude_ids`` (ascending contour index).

    Raises:
        NoTissueError: no contour survives; when ``a_t`` rejected them all, the message gives the
            largest piece's area in ``a_t`` units and the ``params.a_t_hints`` that would keep it.
        ConfigError: seg_level does not exist, or keep_ids names a contour that does not exist.
    """
    level = resolve_level(slide, params.seg_level, name="seg_level", key="seg_level (preset or process-list column)")
    dsx, dsy = slide.level_downsamples[level]
    mask = _tissue_mask(_saturation(slide, level), params)
    ref_area = int(params.ref_patch_size**2 / (dsx * dsy))
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    tissue: list[np.ndarray] = []
    holes: list[list[np.ndarray]] = []
    rejected = 0.0
    if hierarchy is not None and len(contours) > 0:
        hier = np.squeeze(hierarchy, axis=0)[:, 2:]
        tissue, holes, rejected = _filter_contours(
            list(contours), hier, params.a_t * ref_area, params.a_h * ref_area, params.max_n_holes
        )
    tissue = [_scale(c, (dsx, dsy)) for c in tissue]
    holes = [[_scale(h, (dsx, dsy)) for h in hs] for hs in holes]
    ids = _select_ids(len(tissue), params, slide.slide_id)
    out = TissueContours([tissue[i] for i in ids], [holes[i] for i in ids])
    if len(out) == 0:
        hint = _rejected_hint(rejected / ref_area if ref_area else 0.0, params) if not tissue else ""
        raise NoTissueError(
            f"{slide.slide_id}: no tissue found at seg_level {level} (sthresh={params.sthresh}, "
            f"use_otsu={params.use_otsu}, a_t={params.a_t}, keep_ids={list(params.keep_ids)}, "
            f"exclude_ids={list(params.exclude_ids)}){hint}; lower sthresh or a_t, or check keep_ids/"
            "exclude_ids in the process list"
        )
    return out


def _select_ids(n: int, params: SegmentationParams, slide_id: str) -> list[int]:
    keep = {int(i) for i in params.keep_ids}
    bad = sorted(i for i in keep if not 0 <= i < n)
    if bad and n > 0:
        raise ConfigError(
            f"{slide_id}: keep_ids {bad} do not exist ({n} tissue contours, ids 0..{n - 1}); "
            "fix keep_ids in the process list (the segmentation preview of the raw dir numbers the contours)"
        )
    base = keep if keep else set(range(n))
    return sorted(base - {int(i) for i in params.exclude_ids})


# --------------------------------------------------------------------------- GeoJSON


def _ring(cont: np.ndarray) -> list[list[int]]:
    pts = np.asarray(cont, dtype=np.int64).reshape(-1, 2)
    if len(pts) == 0:
        return []
    return np.vstack([pts, pts[:1]]).tolist()


def _unring(ring: Any, path: Path) -> np.ndarray:
    pts = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    if not np.all(np.isfinite(pts)) or np.any(pts != np.round(pts)):
        raise FeatureFileError(
            f"{path}: contour coordinates must be integer level-0 px; re-create the file"
        )
    return pts.astype(np.int32).reshape(-1, 1, 2)


def save_contours_geojson(
    contours: TissueContours, path: str | os.PathLike[str], *, properties: dict
) -> Path:
    """Atomically write contours as a GeoJSON FeatureCollection.

    One Polygon Feature per tissue contour: exterior ring = the contour's points closed (first
    point repeated), interior rings = its holes; coordinates are integer level-0 px ``[x, y]``.
    ``properties`` (e.g. the segmentation parameters; JSON-serialisable) is stored as the
    FeatureCollection's ``"properties"``. Returns the path.
    """
    target = Path(path)
    features = []
    for i, (cont, hs) in enumerate(zip(contours.tissue, contours.holes)):
        features.append(
            {
                "type": "Feature",
                "properties": {"contour_id": i, "n_holes": len(hs)},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [_ring(cont)] + [_ring(h) for h in hs],
                },
            }
        )
    doc = {"type": "FeatureCollection", "properties": dict(properties), "features": features}
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
    return target


def load_contours_geojson(path: str | os.PathLike[str]) -> tuple[TissueContours, dict]:
    """Read a file written by :func:`save_contours_geojson`.

    Returns:
        (contours with (K, 1, 2) int32 arrays equal to those saved, the stored properties dict).

    Raises:
        FeatureFileError: missing file, invalid JSON, or not a FeatureCollection of Polygons.
    """
    src = Path(path)
    if not src.is_file():
        raise FeatureFileError(f"contour file not found: {src}; re-run segmentation")
    try:
        doc = json.loads(src.read_text())
        if doc.get("type") != "FeatureCollection":
            raise ValueError("not a FeatureCollection")
        tissue: list[np.ndarray] = []
        holes: list[list[np.ndarray]] = []
        for feat in doc["features"]:
            geom = feat["geometry"]
            if geom.get("type") != "Polygon" or not geom["coordinates"]:
                raise ValueError(f"geometry type {geom.get('type')!r} is not a Polygon")
            rings = [_unring(r, src) for r in geom["coordinates"]]
            tissue.append(rings[0])
            holes.append(rings[1:])
    except FeatureFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FeatureFileError(
            f"{src} is not a tissue-contour GeoJSON ({exc}); delete it and re-run segmentation"
        ) from exc
    return TissueContours(tissue, holes), dict(doc.get("properties") or {})


# --------------------------------------------------------------------------- CLAM mask.pkl


def _numpy_allowlist() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray as ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    for name in ("Int32DType", "Int64DType", "Float32DType", "Float64DType", "UInt8DType"):
        if hasattr(np.dtypes, name):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array-reconstruction globals."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path
        self._allowed = _numpy_allowlist()

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise FeatureFileError(
                f"{self._path}: refusing to unpickle {module}.{name} (a CLAM mask.pkl holds only "
                "numpy arrays); this file is not a CLAM mask, delete it or re-run segmentation"
            )
        return obj


def load_clam_mask_pkl(path: str | os.PathLike[str]) -> TissueContours:
    """Load CLAM's ``<slide_id>_mask.pkl`` ({'tissue': [...], 'holes': [[...]]}, level-0 px).

    Uses a restricted unpickler that only resolves numpy array-reconstruction globals, so a
    malicious pickle cannot run code.

    Raises:
        FeatureFileError: missing file, a forbidden global (named), or not a CLAM mask dict.
    """
    src = Path(path)
    if not src.is_file():
        raise FeatureFileError(f"CLAM mask file not found: {src}; re-run segmentation")
    try:
        with src.open("rb") as f:
            data = _NumpyOnlyUnpickler(f, src).load()
        tissue = [np.asarray(c, dtype=np.int32).reshape(-1, 1, 2) for c in data["tissue"]]
        holes = [
            [np.asarray(h, dtype=np.int32).reshape(-1, 1, 2) for h in hs] for hs in data["holes"]
        ]
        return TissueContours(tissue, holes)
    except FeatureFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise FeatureFileError(
            f"{src} is not a CLAM mask pickle ({type(exc).__name__}: {exc}); delete it and "
            "re-run segmentation"
        ) from exc


# --------------------------------------------------------------------------- preview


def draw_segmentation(
    slide: Slide,
    contours: TissueContours,
    *,
    vis_level: int,
    line_thickness: int = 250,
    number_contours: bool = True,
) -> np.ndarray:
    """Segmentation preview like CLAM ``visWSI`` (the ``<slide_id>_mask.jpg``).

    Reads the whole ``vis_level`` as RGB; draws tissue contours in green (0, 255, 0) and holes in
    blue (0, 0, 255) with ``int(line_thickness * sqrt(sx * sy))`` px lines (``s = 1/downsample``);
    with ``number_contours`` writes each contour's index in red at its centroid.

    Returns:
        ``(h, w, 3)`` uint8 RGB, the size of ``vis_level``.
    """
    level = resolve_level(slide, vis_level, name="vis_level", key="the vis_level process-list column")
    dsx, dsy = slide.level_downsamples[level]
    scale = (1.0 / dsx, 1.0 / dsy)
    img = slide.read_region((0, 0), level, slide.level_dimensions[level])
    thick = int(line_thickness * math.sqrt(scale[0] * scale[1]))
    for idx, cont in enumerate(contours.tissue):
        c = _scale(cont, scale)
        cv2.drawContours(img, [c], -1, (0, 255, 0), thick, lineType=cv2.LINE_8)
        if number_contours:
            m = cv2.moments(c)
            cx = int(m["m10"] / (m["m00"] + 1e-9))
            cy = int(m["m01"] / (m["m00"] + 1e-9))
            cv2.putText(img, f"{idx}", (cx, cy), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 0, 0), 10)
    for hs in contours.holes:
        if hs:
            cv2.drawContours(img, [_scale(h, scale) for h in hs], -1, (0, 0, 255), thick,
                             lineType=cv2.LINE_8)
    return img


# --------------------------------------------------------------------------- beside a score file

RESEGMENT_PARAMS = SegmentationParams(a_t=1.0, a_h=1.0, max_n_holes=2)
"""Segmentation of a slide whose score file has no contours beside it (re-render, viewer): CLAM's
defaults, keeping pieces down to one 512-px patch in area."""


def contour_files(scores_path: str | os.PathLike[str], slide_id: str) -> tuple[Path, Path]:
    """Tissue contours that may lie beside a score file (a run's raw dir keeps them with the
    blockmap and fine pass): ours ``{slide_id}_tissue.geojson``, then CLAM's ``{slide_id}_mask.pkl``."""
    d = Path(scores_path).parent
    return d / f"{slide_id}_tissue.geojson", d / f"{slide_id}_mask.pkl"


def contours_for_scores(slide: Slide, scores_path: str | os.PathLike[str]) -> tuple[TissueContours, str]:
    """The tissue contours a score file's heatmap is drawn with: those beside it
    (:func:`contour_files`), else a fresh segmentation with :data:`RESEGMENT_PARAMS`.

    Returns:
        ``(contours in level-0 px, where they came from: the file name or "segmented")``.

    Raises:
        FeatureFileError: a contour file beside it cannot be read. NoTissueError: no file and the
            segmentation finds no tissue.
    """
    geojson, pkl = contour_files(scores_path, slide.slide_id)
    if geojson.is_file():
        return load_contours_geojson(geojson)[0], geojson.name
    if pkl.is_file():
        return load_clam_mask_pkl(pkl), pkl.name
    return segment_tissue(slide, RESEGMENT_PARAMS), "segmented"
