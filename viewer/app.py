"""The Flask app: the page, Deep Zoom descriptors and tiles, and the numbers under the cursor.

Routes (``<eid>`` is an entry id of the :class:`~viewer.registry.Registry`, never a path):

========================================  ================================================
``GET /``                                 the page (``static/index.html``)
``GET /api/slides``                       the entries: id, slide, heatmap kind, size, mpp, label/predictions
``GET /dzi/<eid>/<layer>.dzi``            Deep Zoom descriptor; ``layer`` = ``slide`` | ``heatmap``
``GET /tiles/<eid>/<layer>/<L>/<c>_<r>.<fmt>``  a tile (slide / TIFF: jpeg; score file: png, or jpeg q90; style query)
``GET /api/value/<eid>?x=&y=``            patches covering level-0 ``(x, y)``: raw attention, percentile, class scores
``GET /api/extremes/<eid>?k=``            top-k and bottom-k patches (by percentile)
``GET /api/colorbar/<eid>?<style>``       the colour map (256 RGB), scale ``lo``/``hi`` and units
``GET /thumb/<eid>/<i>.jpg``              thumbnail of patch ``i`` (gallery)
========================================  ================================================

Style query of score-file tiles and colour bar: ``cmap``, ``alpha`` (0-1), ``scale``
(``percentile`` | ``raw`` | ``run``), ``lower``/``upper`` (quantiles 0-1), ``blur``, ``binarize``
(0/1), ``thresh`` (0-1, -1 = 1/N), ``overlap`` (0-1, blur kernel), ``blank`` (0/1), ``segment``
(0/1, default 1: colour only inside the tissue contours).

Every refusal is one readable line: 404 for an id not registered, 400 for bad input (``..`` in a
URL, a bad style value, a tile that does not exist, a file the project refuses).
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
from flask import Flask, Response, jsonify, request, send_from_directory

from vis_utils.raster import colormap_lut
from wsi_core.errors import WsiHeatmapsError

from .registry import NotRegistered, Registry
from .sources import ScoreSource, TileCache, TileStyle, min_dz_level

__all__ = ["create_app", "parse_style"]

STATIC = Path(__file__).resolve().parent / "static"
UNITS = {"percentile": "percentile (0-100, this slide)", "raw": "raw attention (pre-softmax)",
         "run": "raw attention (pre-softmax)"}


class BadRequest(Exception):
    """A one-line 400."""


def _flag(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off", ""):
        return False
    raise BadRequest(f"expected 0 or 1, got {v!r}")


def parse_style(args, source: ScoreSource) -> TileStyle:
    """:class:`TileStyle` from query parameters (defaults: the source's overlap). Raises BadRequest."""
    try:
        num = {k: float(args[k]) for k in ("alpha", "lower", "upper", "thresh", "overlap") if k in args}
        flags = {k: _flag(args[k]) for k in ("blur", "binarize", "blank", "segment") if k in args}
    except ValueError as exc:
        raise BadRequest(f"bad style parameter: {exc}") from None
    if any(not math.isfinite(v) for v in num.values()):
        raise BadRequest("style parameters must be finite numbers")
    try:
        style = TileStyle(cmap=args.get("cmap", "jet"), alpha=num.get("alpha", 0.4),
                          scale=args.get("scale", "percentile"), lower=num.get("lower", 0.0),
                          upper=num.get("upper", 1.0), blur=flags.get("blur", False),
                          binarize=flags.get("binarize", False), binary_thresh=num.get("thresh", -1.0),
                          overlap=num.get("overlap", source.default_overlap), blank=flags.get("blank", False),
                          segment=flags.get("segment", True))
        style.heatmap_style()          # validates alpha / overlap
        colormap_lut(style.cmap)       # validates cmap
        source.scale_for(style)        # validates scale
    except WsiHeatmapsError as exc:
        raise BadRequest(str(exc)) from None
    return style


def create_app(registry: Registry, *, cache_bytes: int = 32 << 20) -> Flask:
    """The viewer app serving ``registry``'s entries (see the module docstring); ``cache_bytes``
    bounds the LRU of encoded tiles."""
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["registry"] = registry
    cache = TileCache(cache_bytes)
    app.config["tile_cache"] = cache

    @app.before_request
    def refuse_dot_dot():
        if ".." in request.path.split("/") or ".." in request.full_path:
            return _error(400, "refused: '..' in the URL (the viewer serves registered files by id only)")
        return None

    @app.errorhandler(NotRegistered)
    def unknown(exc):
        return _error(404, exc.args[0])

    @app.errorhandler(BadRequest)
    def bad(exc):
        return _error(400, str(exc))

    @app.errorhandler(WsiHeatmapsError)
    def refused(exc):
        return _error(400, str(exc))

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html")

    @app.get("/api/slides")
    def slides():
        out = []
        for e in registry.entries.values():
            out.append({"id": e.id, "slide_id": e.slide_id, "slide": e.slide_path.name,
                        "heatmap": e.heatmap_path.name, "kind": e.kind, **e.info})
        return jsonify(out)

    @app.get("/api/slide/<eid>")
    def slide_info(eid):
        s = registry.slide(eid)
        h = registry.heatmap(eid)
        info = {"id": eid, "width": s.dimensions[0], "height": s.dimensions[1], "mpp": s.slide.mpp,
                "min_level": min_dz_level(s.dz),
                "kind": registry.entry(eid).kind, **registry.entry(eid).info}
        if isinstance(h, ScoreSource):
            info.update(n_patches=len(h.coords), patch=h.patch, has_raw=h.raw is not None,
                        has_class_logits=h.class_logits is not None, overlap=h.default_overlap,
                        run_scale=h.run_scale is not None, tissue=h.tissue_source)
        return jsonify(info)

    def _layer(eid: str, layer: str):
        if layer == "slide":
            return registry.slide(eid)
        if layer == "heatmap":
            return registry.heatmap(eid)
        raise NotRegistered(f"no layer {layer!r}; use slide or heatmap")

    @app.get("/dzi/<eid>/<layer>.dzi")
    def dzi(eid, layer):
        src = _layer(eid, layer)
        slide = src.slide if isinstance(src, ScoreSource) else src
        text = slide.dz.get_dzi("png" if isinstance(src, ScoreSource) else "jpeg")
        return Response(text, mimetype="application/xml")

    @app.get("/tiles/<eid>/<layer>/<int:level>/<int:col>_<int:row>.<fmt>")
    def tile(eid, layer, level, col, row, fmt):
        src = _layer(eid, layer)
        if isinstance(src, ScoreSource):
            style = parse_style(request.args, src)
            kind = "jpeg" if fmt in ("jpeg", "jpg") else "png"
            key = (eid, layer, style, level, col, row, kind)
            make, mime = (lambda: src.tile(level, col, row, style, kind)), f"image/{kind}"
        else:
            key = (eid, layer, level, col, row)
            make, mime = (lambda: src.tile(level, col, row)), "image/jpeg"
        try:
            data = cache.get(key, make)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return Response(data, mimetype=mime, headers={"Cache-Control": "max-age=600"})

    def _scores(eid: str) -> ScoreSource:
        src = registry.heatmap(eid)
        if not isinstance(src, ScoreSource):
            raise BadRequest(f"{eid}: the heatmap is a TIFF image; patch values need its score file (--heatmap *.h5)")
        return src

    @app.get("/api/value/<eid>")
    def value(eid):
        src = _scores(eid)
        try:
            x, y = float(request.args["x"]), float(request.args["y"])
        except (KeyError, ValueError):
            raise BadRequest("value needs level-0 x and y numbers (?x=..&y=..)") from None
        return jsonify({"x": x, "y": y, "patches": src.value_at(x, y)})

    @app.get("/api/extremes/<eid>")
    def extremes(eid):
        src = _scores(eid)
        k = request.args.get("k", "8")
        if not k.isdigit():
            raise BadRequest(f"k must be a whole number, got {k!r}")
        top, bottom = src.extremes(min(int(k), 100))
        return jsonify({"top": top, "bottom": bottom})

    @app.get("/api/colorbar/<eid>")
    def colorbar(eid):
        src = registry.heatmap(eid)
        if not isinstance(src, ScoreSource):
            return jsonify({"kind": "tiff", "units": "as drawn in the TIFF (see the colour bar PNG written beside it)"})
        style = parse_style(request.args, src)
        _, scale = src.plan(style)
        lut = colormap_lut(style.cmap)
        lo, hi = (0.0, 100.0) if scale is None else (scale.lo, scale.hi)
        return jsonify({"kind": "scores", "cmap": style.cmap, "lut": ["#%02x%02x%02x" % tuple(c) for c in lut.tolist()],
                        "lo": lo, "hi": hi, "units": UNITS[style.scale],
                        "scale": "rank percentiles of this slide" if scale is None else
                        f"quantiles {scale.att_lower_threshold:g}-{scale.att_upper_threshold:g} of "
                        + ("this slide" if scale.source == "slide" else f"{scale.n_slides} slides of the run")})

    @app.get("/thumb/<eid>/<int:i>.jpg")
    def thumb(eid, i):
        src = _scores(eid)
        if not 0 <= i < len(src.coords):
            raise BadRequest(f"no patch {i} (0-{len(src.coords) - 1})")
        x, y = (int(v) for v in src.coords[i])
        pw, ph = src.patch
        lvl = src.slide.slide.best_level_for_downsample(max(pw, ph) / 96)
        dsx, dsy = src.slide.slide.level_downsamples[lvl]
        rgb = src.slide.slide.read_region((x, y), lvl, (max(1, int(pw / dsx)), max(1, int(ph / dsy))))
        rgb = cv2.resize(rgb, (96, int(96 * ph / pw)), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return Response(buf.tobytes(), mimetype="image/jpeg")

    return app


def _error(status: int, message: str) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = status
    return resp
