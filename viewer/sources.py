"""What the viewer serves: a slide, its heatmap (a pyramidal TIFF or a score file) and a grid index.

Every source speaks Deep Zoom in the **slide's** geometry (OpenSlide's ``DeepZoomGenerator``,
254 px tiles, 1 px overlap), so the two viewers of the page share one coordinate system: DZ level
``L`` has downsample ``d = 2 ** (max_level - L)`` and DZ px ``p`` is level-0 px ``p * d``.

* :class:`SlideSource` - the slide through ``DeepZoomGenerator`` (JPEG tiles).
* :class:`TiffHeatmapSource` - a pyramidal heatmap TIFF this tool wrote at ``vis_level`` 0
  (``vis_utils.tiled.render_heatmap_tiff``), opened with OpenSlide; its level-0 size must equal
  the slide's (else refused: a TIFF of another level or slide would be drawn in the wrong place).
* :class:`ScoreSource` - a score file (blockmap, fine pass or ``_coords.h5``,
  ``wsi_core.formats.read_scores``) drawn on the fly with the project's renderer
  (``vis_utils.heatmap.plan_heatmap`` + ``render_on_canvas``): a tile at the DZ level of
  downsample ``d`` equals the crop of ``render_heatmap`` at a slide level of downsample ``d``
  (exactly so at level 0, and at every slide level whose downsample is a power of two), tissue
  mask included: the contours beside the score file (``{slide_id}_tissue.geojson`` or CLAM's
  ``{slide_id}_mask.pkl``, as a run keeps them), else a fresh segmentation, as the re-render does
  (``wsi_core.tissue.contours_for_scores``). Deep Zoom levels of at most ``LAYER_MAX_PX`` pixels
  are coloured whole once per style (``vis_utils.heatmap.colour_layer``) and each tile blends its
  window of that layer - a tile of the overview covers up to all N patches, and is then a crop;
  deeper tiles are drawn from the patches under them (with blur: always, since the blur mixes the
  slide into the colours).
* :class:`GridIndex` - patches bucketed by grid cell, so a tile or a point asks only the cells
  it touches (never a scan of all N patches).
"""
from __future__ import annotations

import ctypes
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from openslide.deepzoom import DeepZoomGenerator

from vis_utils.heatmap import ColourLayer, HeatmapPlan, HeatmapStyle, blur_ksize, colour_layer, plan_heatmap, \
    render_on_canvas
from vis_utils.normalize import ScoreScale, fit_scale
from vis_utils.percentiles import rank_percentiles
from vis_utils.raster import tissue_mask
from vis_utils.tiled import TissueWindows
from wsi_core.errors import ConfigError, FeatureFileError, NoTissueError
from wsi_core.formats import has_raw_scores, read_raw_scores, read_scores, score_file_kind, scores_are_percentiles
from wsi_core.levels import patch_footprint_level0, to_level_px
from wsi_core.slide import Slide, open_slide
from wsi_core.tissue import TissueContours, contours_for_scores

__all__ = ["TILE_SIZE", "TILE_OVERLAP", "GridIndex", "SlideSource", "TiffHeatmapSource", "ScoreSource",
           "TileStyle", "TileCache", "dz_tile_box", "min_dz_level", "smallest_k",
           "release_heap", "limit_arenas"]

TILE_SIZE = 254            # Deep Zoom tile size (px) and overlap: 256-px tiles on the wire
TILE_OVERLAP = 1
JPEG_QUALITY = 80           # slide tiles
HEATMAP_JPEG_QUALITY = 90   # live heatmap tiles asked as .jpeg (render_heatmap_tiff's quality)
TRIM_AFTER_PATCHES = 50_000   # tiles drawn from more patches give their heap back (release_heap)
LAYER_MAX_PX = 1 << 22        # Deep Zoom levels up to 4 Mpx are coloured whole, once per style
LAYER_CACHE_BYTES = 96 << 20  # colour layers kept (LRU)
REGION_CACHE_BYTES = 16 << 20  # decoded slide tiles kept (LRU): ~80 tiles, two screens
LAYER_BAND_PX = 1 << 18       # a layer is coloured in bands of 256 Kpx (bounds its temporaries)
_ONE_LAYER_AT_A_TIME = threading.Lock()
log = logging.getLogger(__name__)


def dz_tile_box(dz: DeepZoomGenerator, level: int, col: int, row: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` DZ px of tile ``(col, row)`` at DZ ``level``, overlap included
    (``DeepZoomGenerator``'s own rule). Raises ValueError for a tile that does not exist."""
    if not 0 <= level < dz.level_count:
        raise ValueError(f"no Deep Zoom level {level} (0-{dz.level_count - 1})")
    (w, h), (nc, nr) = dz.level_dimensions[level], dz.level_tiles[level]
    if not (0 <= col < nc and 0 <= row < nr):
        raise ValueError(f"no tile {col}_{row} at Deep Zoom level {level} ({nc}x{nr} tiles)")
    x0 = col * TILE_SIZE - (TILE_OVERLAP if col else 0)
    y0 = row * TILE_SIZE - (TILE_OVERLAP if row else 0)
    x1 = min(w, (col + 1) * TILE_SIZE + (TILE_OVERLAP if col < nc - 1 else 0))
    y1 = min(h, (row + 1) * TILE_SIZE + (TILE_OVERLAP if row < nr - 1 else 0))
    return x0, y0, x1, y1


def release_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere). Reading a
    score H5 of 1M patches in 32-row chunks leaves ~120 MiB of HDF5 buffers on the heap."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def limit_arenas(n: int = 1) -> None:
    """At most ``n`` glibc malloc arenas (``M_ARENA_MAX``): a threaded server otherwise keeps one
    heap per request thread (and per tile-decoding thread, :mod:`wsi_core.jpeg_tiles`), and the
    RSS grows with every burst of tiles. Call it before any thread starts. One arena: the peak RSS
    of ``benchmarks/bench_viewer.py`` without a contour file fell from 461-512 MiB (two arenas) to
    420 MiB, tile times unchanged. No-op without glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, int(n))      # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def min_dz_level(dz: DeepZoomGenerator) -> int:
    """The deepest Deep Zoom level that is a single tile: the page asks for nothing coarser."""
    return max(lvl for lvl in range(dz.level_count) if dz.level_tiles[lvl] == (1, 1))


def _jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY, full_chroma: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    if full_chroma:      # 4:4:4 - the colour map's hue edges stay sharp (as in the heatmap TIFFs)
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    return buf.tobytes()


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return buf.tobytes()


class GridIndex:
    """Patches bucketed by a square grid of ``cell`` level-0 px (their top-left corner's cell).

    Args:
        coords: ``(N, 2)`` int64 level-0 px top-left ``(x, y)``.
        patch: ``(pw, ph)`` level-0 px covered by each patch.
        cell: grid cell size, level-0 px (default ``2 * max(patch)``).

    A query visits only the grid rows/columns its box touches (one ``searchsorted`` per cell row):
    a 254-px tile at level 0 costs ``O(patches near it)``, independent of N.
    """

    def __init__(self, coords: np.ndarray, patch: tuple[int, int], cell: int | None = None) -> None:
        self.coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.patch = (int(patch[0]), int(patch[1]))
        self.cell = int(cell or 2 * max(self.patch))
        g = self.coords // self.cell
        self.origin = g.min(axis=0) if len(g) else np.zeros(2, np.int64)
        g = g - self.origin
        self.ncols = int(g[:, 0].max()) + 1 if len(g) else 1
        keys = g[:, 1] * self.ncols + g[:, 0]
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.nrows = int(g[:, 1].max()) + 1 if len(g) else 0

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Indices (ascending) of the patches whose box ``[x, x + pw) x [y, y + ph)`` meets the
        level-0 box ``[x0, x1) x [y0, y1)``."""
        pw, ph = self.patch
        c0 = max(int((x0 - pw) // self.cell) - int(self.origin[0]), 0)
        c1 = min(int((x1 - 1) // self.cell) - int(self.origin[0]), self.ncols - 1)
        r0 = max(int((y0 - ph) // self.cell) - int(self.origin[1]), 0)
        r1 = min(int((y1 - 1) // self.cell) - int(self.origin[1]), self.nrows - 1)
        if c0 > c1 or r0 > r1:
            return np.zeros(0, np.int64)
        rows = np.arange(r0, r1 + 1) * self.ncols
        lo = np.searchsorted(self.keys, rows + c0, side="left")
        hi = np.searchsorted(self.keys, rows + c1, side="right")
        cand = np.concatenate([self.order[a:b] for a, b in zip(lo, hi) if b > a] or [np.zeros(0, np.int64)])
        c = self.coords[cand]
        hit = (c[:, 0] < x1) & (c[:, 0] + pw > x0) & (c[:, 1] < y1) & (c[:, 1] + ph > y0)
        return np.sort(cand[hit])


class TileCache:
    """A thread-safe LRU of encoded tiles (or any values: ``sizeof`` gives their bytes), bounded
    in bytes; a value being made by one thread is waited for by the others (never made twice at
    once)."""

    def __init__(self, max_bytes: int = 64 << 20, sizeof: Callable[[object], int] = len) -> None:
        self.max_bytes, self.size, self.sizeof = int(max_bytes), 0, sizeof
        self._d: OrderedDict[tuple, bytes] = OrderedDict()
        self._busy: dict[tuple, threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        while True:
            with self._lock:
                if key in self._d:
                    self._d.move_to_end(key)
                    return self._d[key]
                wait = self._busy.get(key)
                if wait is None:
                    self._busy[key] = threading.Event()
                    break
            wait.wait()
        try:
            data = make()
            with self._lock:
                self._d[key] = data
                self.size += self.sizeof(data)
                while self.size > self.max_bytes and len(self._d) > 1:
                    self.size -= self.sizeof(self._d.popitem(last=False)[1])
            return data
        finally:
            with self._lock:
                self._busy.pop(key).set()


class SlideSource:
    """A slide served as Deep Zoom (JPEG tiles of :meth:`region`). Raises SlideOpenError (one
    line) when OpenSlide cannot open it.

    Decoded regions are kept in a small LRU (``REGION_CACHE_BYTES``): the heatmap drawn over the
    slide asks for the same tile boxes as the slide viewer beside it, and decodes none twice."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.slide: Slide = open_slide(self.path)
        self.dz = DeepZoomGenerator(self.slide.handle, tile_size=TILE_SIZE, overlap=TILE_OVERLAP)
        self._regions = TileCache(REGION_CACHE_BYTES, sizeof=lambda a: a.nbytes)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(w, h)`` px."""
        return self.slide.dimensions

    def tile(self, level: int, col: int, row: int) -> bytes:
        """JPEG of Deep Zoom tile ``(col, row)`` at DZ ``level`` (ValueError for a bad address)."""
        return _jpeg(self.region(level, dz_tile_box(self.dz, level, col, row)))

    def region(self, level: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """``(h, w, 3)`` uint8 RGB of DZ px ``box`` at DZ ``level`` (a fresh array), read from the
        best slide level and resized (INTER_AREA) - DZ level ``max`` is exactly ``read_region`` at
        level 0."""
        return self._regions.get((level, tuple(box)), lambda: self._read(level, box)).copy()

    def _read(self, level: int, box: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = box
        d = 2.0 ** (self.dz.level_count - 1 - level)
        lvl = self.slide.best_level_for_downsample(d)
        ds = self.slide.level_downsamples[lvl]
        loc = (int(x0 * d), int(y0 * d))
        size = (max(1, math.ceil((x1 - x0) * d / ds[0])), max(1, math.ceil((y1 - y0) * d / ds[1])))
        rgb = self.slide.read_region(loc, lvl, size)
        if rgb.shape[1] != x1 - x0 or rgb.shape[0] != y1 - y0:
            rgb = cv2.resize(rgb, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        return rgb


class TiffHeatmapSource(SlideSource):
    """A pyramidal heatmap TIFF written at ``vis_level`` 0 of ``slide`` (OpenSlide reads it).

    Raises:
        SlideOpenError: OpenSlide cannot open the TIFF.
        ConfigError: its level-0 size differs from the slide's (names both sizes; offers the
            score-file mode).
    """

    def __init__(self, path: str | Path, slide: SlideSource) -> None:
        super().__init__(path)
        if self.dimensions != slide.dimensions:
            (w, h), (sw, sh) = self.dimensions, slide.dimensions
            raise ConfigError(
                f"{self.path}: heatmap TIFF level 0 is {w}x{h} px but slide {slide.slide.slide_id} is "
                f"{sw}x{sh} px (a TIFF drawn at another vis_level or of another slide); view its score "
                "file instead: --heatmap with the slide's blockmap or fine-pass H5")


@dataclass(frozen=True)
class TileStyle:
    """How a score file is drawn (the page's style query parameters).

    cmap: matplotlib name. alpha: colour weight 0-1 over the slide. scale: ``'percentile'`` (CLAM
    rank percentiles of this slide), ``'raw'`` (raw attention, quantiles ``lower``/``upper`` of this
    slide) or ``'run'`` (raw attention, quantiles over every slide of the run). blur, binarize,
    binary_thresh (-1 = 1/N), overlap (sets the blur kernel): as ``HeatmapStyle``.
    blank: white canvas instead of the slide. segment: colour only inside the tissue mask.
    """

    cmap: str = "jet"
    alpha: float = 0.4
    scale: str = "percentile"
    lower: float = 0.0
    upper: float = 1.0
    blur: bool = False
    binarize: bool = False
    binary_thresh: float = -1.0
    overlap: float = 0.0
    blank: bool = False
    segment: bool = True

    def heatmap_style(self) -> HeatmapStyle:
        return HeatmapStyle(cmap=self.cmap, alpha=self.alpha, blur=self.blur, overlap=self.overlap,
                            binarize=self.binarize, binary_thresh=self.binary_thresh,
                            blank_canvas=self.blank, segment=self.segment)

    def colour_key(self) -> tuple:
        """What the colours depend on (not alpha, not the canvas)."""
        return (self.scale, self.lower, self.upper, self.binarize, self.binary_thresh, self.cmap, self.segment)


SCALES = ("percentile", "raw", "run")


@dataclass
class ScoreSource:
    """A score file of ``slide`` drawn on the fly; see the module docstring.

    Attributes:
        scores: ``(N,)`` float32 ``attention_scores``. coords: ``(N, 2)`` int64 level-0 px.
        percentiles: ``(N,)`` float64 0-100 (the file's own when it holds percentiles).
        raw: ``(N,)`` raw attention (``attention_raw``, else the file's scores when they are raw;
            None when the file holds percentiles only). class_logits: ``(N, C)`` per-patch class logits or None.
        patch: ``(pw, ph)`` level-0 px. index: the :class:`GridIndex`.
        score_kind: what ``attention_scores`` hold when the file does not say (``score_kind``
            attribute): ``'raw'`` or ``'percentile'`` (CLAM's fine-pass H5 with use_ref_scores);
            None: as the re-render decides (``scores_are_percentiles``: CLAM's blockmaps are raw,
            its fine-pass H5s percentiles when every value lies in 0-100).
        segment: find the tissue contours (``contours``; ``tissue_source`` says from where: a
            file name or ``"segmented"``); False: none (every covered pixel is coloured).

    Raises:
        FeatureFileError: not a score file (no ``attention_scores``), coords outside the slide,
            no patch size known.
    """

    path: Path
    slide: SlideSource
    patch_size: int | None = None
    run_scale: Callable[[float, float], ScoreScale] | None = None
    score_kind: str | None = None
    segment: bool = True
    _plans: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        sf = read_scores(self.path)
        self.attrs = sf.attrs
        self.scores, self.coords = sf.scores, sf.coords
        w, h = self.slide.dimensions
        out = (self.coords[:, 0] < 0) | (self.coords[:, 1] < 0) | (self.coords[:, 0] >= w) | (self.coords[:, 1] >= h)
        if out.any():
            x, y = self.coords[np.argmax(out)]
            raise FeatureFileError(
                f"{self.path}: {int(out.sum())} of {len(out)} coords lie outside slide "
                f"{self.slide.slide.slide_id} ({w}x{h} level-0 px), e.g. ({x}, {y}); is it the score "
                "file of another slide?")
        self.patch = self._patch_wh()
        if self.score_kind not in (None, "raw", "percentile"):
            raise ConfigError(f"score kind must be 'raw' or 'percentile', got {self.score_kind!r}")
        kind = score_file_kind(self.path)
        if sf.attrs.get("score_kind") is not None or self.score_kind is None or kind == "blockmap":
            is_pct = scores_are_percentiles(sf, file_kind=kind)      # the file says, or its name does
        else:
            is_pct = self.score_kind == "percentile"
        self.percentiles = sf.scores.astype(np.float64) if is_pct else rank_percentiles(sf.scores)
        self.raw, self.class_logits = (None if is_pct else sf.scores), None
        if has_raw_scores(self.path):
            rs = read_raw_scores(self.path)
            self.raw, self.class_logits = rs.attention, rs.class_logits
        self.index = GridIndex(self.coords, self.patch)
        self._lock = threading.Lock()
        self.contours: TissueContours | None = None
        self.tissue_source: str | None = None
        if self.segment:
            try:
                self.contours, self.tissue_source = contours_for_scores(self.slide.slide, self.path)
            except (NoTissueError, FeatureFileError) as exc:      # drawn without a mask, and the page says so
                log.warning("%s: no tissue mask (%s); every pixel a patch covers is coloured", self.path.name, exc)
        self._layers = TileCache(LAYER_CACHE_BYTES, sizeof=lambda layer: layer.nbytes)
        self._windows: dict[int, TissueWindows] = {}
        if "step_size" in self.attrs and self.patch[0]:
            self.default_overlap = max(0.0, 1.0 - float(self.attrs["step_size"]) / self.patch[0])
        else:
            self.default_overlap = 0.0
        self.plan(TileStyle(overlap=self.default_overlap))     # the page's first style: ready before its tiles
        release_heap()

    def _patch_wh(self) -> tuple[int, int]:
        a = self.attrs
        if "patch_size_level0" in a:
            return int(a["patch_size_level0"]), int(a["patch_size_level0"])
        if self.patch_size:
            return int(self.patch_size), int(self.patch_size)
        if "patch_size" in a:
            return patch_footprint_level0(self.slide.slide, patch_size=int(a["patch_size"]),
                                          patch_level=int(a.get("patch_level", 0)),
                                          custom_downsample=int(a.get("custom_downsample", 1)))
        raise FeatureFileError(f"{self.path}: the file does not say its patch size; pass --patch-size "
                               "(level-0 px, e.g. 256 for CLAM's default)")

    # ------------------------------------------------------------------ colour values
    def scale_for(self, style: TileStyle) -> ScoreScale | None:
        """The raw-attention colour scale of ``style`` (None for ``'percentile'``).

        Raises:
            ConfigError: unknown scale; ``'raw'``/``'run'`` on a file with percentiles only;
                ``'run'`` without a run.
        """
        if style.scale not in SCALES:
            raise ConfigError(f"scale must be one of {SCALES}, got {style.scale!r}")
        if style.scale == "percentile":
            return None
        if self.raw is None:
            raise ConfigError(f"{self.path.name}: holds percentiles only (no raw attention); use scale=percentile")
        if style.scale == "run":
            if self.run_scale is None:
                raise ConfigError("scale=run needs a run (--run RAW_DIR/EXP); use scale=raw for this slide alone")
            return self.run_scale(style.lower, style.upper)
        return fit_scale([self.raw], lower=style.lower, upper=style.upper, kind="quantile", source="slide")

    def plan(self, style: TileStyle) -> tuple[HeatmapPlan, ScoreScale | None]:
        """``plan_heatmap`` at level 0 for the style's scale (cached): 0-1 values and threshold."""
        key = (style.scale, style.lower, style.upper, style.binarize, style.binary_thresh)
        with self._lock:
            if key in self._plans:
                return self._plans[key]
        scale = self.scale_for(style)
        values = self.percentiles if scale is None else scale.apply(self.raw) * 100
        plan = plan_heatmap(self.slide.slide, values, self.coords, patch_size_level0=self.patch, vis_level=0,
                            style=style.heatmap_style(), convert_to_percentiles=False)
        with self._lock:
            self._plans[key] = (plan, scale)
        return plan, scale

    def render(self, level: int, box: tuple[int, int, int, int], style: TileStyle) -> np.ndarray:
        """``(h, w, 3)`` uint8 RGB of DZ px ``box`` at DZ ``level``: ``render_on_canvas`` on the
        canvas of downsample ``d`` (patch boxes ``ceil(coord / d)`` + ``ceil(patch / d)``) - as a
        window of the level's colour layer (levels of at most ``LAYER_MAX_PX``, no blur), else from
        the patches under the box plus a blur halo (clipped to the level, so blur borders equal the
        full render's)."""
        plan, _ = self.plan(style)
        hs = style.heatmap_style()
        dz = self.slide.dz
        lw, lh = dz.level_dimensions[level]
        x0, y0, x1, y1 = box
        if not hs.blur and lw * lh <= LAYER_MAX_PX:
            layer = self._layers.get((level, style.colour_key()), lambda: self._colour_layer(level, style, plan))
            canvas = np.full((y1 - y0, x1 - x0, 3), 255, np.uint8) if hs.blank_canvas else self.slide.region(level, box)
            return layer.blend(canvas, hs.alpha, (x0, y0))
        scale, psize = self._level_scale(level)
        halo = 2 * (blur_ksize(psize, hs.overlap)[1] // 2) if hs.blur else 0
        cx0, cy0, cx1, cy1 = max(0, x0 - halo), max(0, y0 - halo), min(lw, x1 + halo), min(lh, y1 + halo)
        if hs.blank_canvas:
            canvas = np.full((cy1 - cy0, cx1 - cx0, 3), 255, np.uint8)
        else:
            canvas = self.slide.region(level, (cx0, cy0, cx1, cy1))
        d = 1.0 / scale[0]
        sel = self.index.query(cx0 * d - d, cy0 * d - d, cx1 * d + d, cy1 * d + d)
        cc = to_level_px(self.coords[sel], scale) - np.array([cx0, cy0])
        tissue = self._tissue_windows(level).mask((cx0, cy0, cx1, cy1)) if self._segmented(style) else None
        out = render_on_canvas(canvas, plan.scores[sel], cc, patch_size=psize, threshold=plan.threshold,
                               style=hs, tissue=tissue, inplace=True)
        if len(sel) > TRIM_AFTER_PATCHES:      # an overview tile's temporaries: hand them back
            release_heap()
        return out[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]

    def _level_scale(self, level: int) -> tuple[np.ndarray, tuple[int, int]]:
        """``(scale (2,) = 1 / d, patch size in px)`` of DZ ``level`` (downsample ``d``)."""
        d = 2.0 ** (self.slide.dz.level_count - 1 - level)
        scale = np.array([1.0 / d, 1.0 / d])
        return scale, tuple(int(v) for v in to_level_px(self.patch, scale))

    def _segmented(self, style: TileStyle) -> bool:
        return style.segment and self.contours is not None

    def _colour_layer(self, level: int, style: TileStyle, plan: HeatmapPlan) -> ColourLayer:
        """The whole DZ ``level`` coloured (``render_heatmap``'s colours and mask at that scale);
        one layer at a time per process (a million patches take ~170 MiB of temporaries)."""
        with _ONE_LAYER_AT_A_TIME:
            return self._render_layer(level, style, plan)

    def _render_layer(self, level: int, style: TileStyle, plan: HeatmapPlan) -> ColourLayer:
        scale, psize = self._level_scale(level)
        size = self.slide.dz.level_dimensions[level]
        tissue = tissue_mask(self.contours, region_size=size, scale=(scale[0], scale[1]), top_left=(0, 0),
                             use_holes=True) if self._segmented(style) else None
        layer = colour_layer(size, plan.scores, to_level_px(self.coords, scale), patch_size=psize,
                             threshold=plan.threshold, style=style.heatmap_style(), tissue=tissue,
                             band_pixels=LAYER_BAND_PX)
        release_heap()
        return layer

    def _tissue_windows(self, level: int) -> TissueWindows:
        with self._lock:
            if level not in self._windows:
                scale, _ = self._level_scale(level)
                self._windows[level] = TissueWindows(self.contours, (scale[0], scale[1]),
                                                     self.slide.dz.level_dimensions[level])
            return self._windows[level]

    def tile(self, level: int, col: int, row: int, style: TileStyle, fmt: str = "png") -> bytes:
        """Tile ``(col, row)`` at DZ ``level`` as ``fmt``: ``'png'`` (the renderer's exact pixels) or
        ``'jpeg'`` (quality ``HEATMAP_JPEG_QUALITY``, 4:4:4, as the heatmap TIFFs store their tiles: what
        the page asks for - a tenth of the bytes, faster to encode and to decode)."""
        rgb = self.render(level, dz_tile_box(self.slide.dz, level, col, row), style)
        return _jpeg(rgb, HEATMAP_JPEG_QUALITY, full_chroma=True) if fmt == "jpeg" else _png(rgb)

    # ------------------------------------------------------------------ numbers
    def patch_record(self, i: np.ndarray) -> list[dict]:
        """JSON-able rows for patch indices ``i``: level-0 ``x, y, w, h``, ``attention`` (the
        file's ``attention_scores``), ``raw`` attention, ``percentile`` (0-100), ``class_logits`` (per-patch class logits)."""
        rows = []
        for j in np.asarray(i, dtype=np.int64).tolist():
            r = {"index": j, "x": int(self.coords[j, 0]), "y": int(self.coords[j, 1]),
                 "w": self.patch[0], "h": self.patch[1], "attention": float(self.scores[j]),
                 "percentile": float(self.percentiles[j]),
                 "raw": None if self.raw is None else float(self.raw[j])}
            if self.class_logits is not None:
                r["class_logits"] = [float(v) for v in self.class_logits[j]]
            rows.append(r)
        return rows

    def value_at(self, x: float, y: float) -> list[dict]:
        """The patches covering level-0 point ``(x, y)`` (see :meth:`patch_record`)."""
        return self.patch_record(self.index.query(x, y, x + 1, y + 1))

    def extremes(self, k: int) -> tuple[list[dict], list[dict]]:
        """Top-k and bottom-k patches by percentile (ties: lower index first); ``O(N)``, no sort
        of all N patches."""
        k = max(0, min(int(k), len(self.percentiles)))
        return (self.patch_record(smallest_k(-self.percentiles, k)),
                self.patch_record(smallest_k(self.percentiles, k)))


def smallest_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest of ``(N,)`` ``values``, ascending by value, ties by index -
    ``np.argsort(values, kind="stable")[:k]`` through a partition (``O(N + k log k)``)."""
    values = np.asarray(values)
    if k <= 0:
        return np.zeros(0, np.int64)
    if k >= len(values):
        return np.argsort(values, kind="stable")
    kth = np.partition(values, k - 1)[k - 1]
    cand = np.flatnonzero(values <= kth)            # ascending index: the stable sort keeps it for ties
    return cand[np.argsort(values[cand], kind="stable")][:k]
