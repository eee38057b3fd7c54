"""``view-heatmaps`` (= ``create-heatmaps view`` = ``view_heatmap_sync.py``): serve the viewer.

    view-heatmaps --slide SLIDE.svs --heatmap HEATMAP.tiff|SCORES.h5 [--patch-size 256]
    view-heatmaps --run RAW_DIR/EXP [--results RESULTS.csv] [--slide-dir DIR]
    view-heatmaps --run RESULTS.csv [--slide-dir DIR]

Binds 127.0.0.1 (reach it from elsewhere through an SSH tunnel: ``ssh -L 8000:localhost:8000``);
``--host 0.0.0.0`` opens it to the network, with a warning.
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import webbrowser

from werkzeug.serving import BaseWSGIServer, make_server

from wsi_core.errors import ConfigError, WsiHeatmapsError

from .app import create_app
from .registry import Registry
from .sources import limit_arenas

__all__ = ["main", "build_parser", "serve"]

log = logging.getLogger("viewer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="view-heatmaps", description="Synchronised web viewer: a slide beside its heatmap.")
    p.add_argument("--slide", help="the slide file (OpenSlide)")
    p.add_argument("--heatmap", help="its heatmap: a pyramidal TIFF written at vis_level 0, or a score H5 "
                                     "(blockmap, fine pass or _coords.h5) drawn live")
    p.add_argument("--run", help="a run's raw directory RAW_DIR/EXP, or its results CSV: every slide of the run")
    p.add_argument("--results", help="the run's results CSV (label, Pred_c, p_c per slide)")
    p.add_argument("--slide-dir", help="where the run's slides are (default: data_dir of RAW_DIR/EXP/config.yaml)")
    p.add_argument("--patch-size", type=int, help="level-0 px of one patch, for score files that do not say it")
    p.add_argument("--score-kind", choices=("raw", "percentile"),
                   help="what score files that do not say hold (CLAM's fine-pass H5: percentiles with "
                        "use_ref_scores); default: the run's config.yaml, else CLAM's blockmaps raw and its fine passes "
                        "percentiles when every value lies in 0-100. Never applied to blockmaps (always raw)")
    p.add_argument("--no-segment", dest="segment", action="store_false",
                   help="colour every pixel a patch covers: no tissue contours (by default those beside the score "
                        "file - {slide_id}_tissue.geojson or CLAM's {slide_id}_mask.pkl - else a fresh segmentation)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    return p


def build_registry(args: argparse.Namespace) -> Registry:
    if args.run:
        if args.slide or args.heatmap:
            raise ConfigError("pass either --run or --slide with --heatmap, not both")
        kw = dict(slide_dir=args.slide_dir, patch_size=args.patch_size, score_kind=args.score_kind, segment=args.segment)
        if args.run.lower().endswith(".csv"):
            return Registry.from_results(args.run, **kw)
        return Registry.from_run(args.run, results_csv=args.results, **kw)
    if not (args.slide and args.heatmap):
        raise ConfigError("pass --slide SLIDE --heatmap HEATMAP (or --run RAW_DIR/EXP)")
    return Registry.single(args.slide, args.heatmap, patch_size=args.patch_size, score_kind=args.score_kind,
                           segment=args.segment)


def serve(registry: Registry, host: str = "127.0.0.1", port: int = 8000) -> BaseWSGIServer:
    """A threaded WSGI server of the viewer app (call ``serve_forever``; ``server_port`` is the port).

    Raises:
        ConfigError: the port is in use or the address cannot be bound (one line).
    """
    limit_arenas()
    try:      # werkzeug prints several lines and exits when the port is taken: check first
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        return make_server(host, port, create_app(registry), threaded=True)
    except (OSError, SystemExit) as exc:
        raise ConfigError(f"cannot serve on {host}:{port} ({getattr(exc, 'strerror', None) or exc}); "
                          "if the port is in use pass --port N (or --port 0 for a free one)") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: anyone who can reach this address can view these slides; "
                    "prefer the default 127.0.0.1 with an SSH tunnel", args.host)
    limit_arenas()          # before the registry's reads start any thread
    try:
        registry = build_registry(args)
        server = serve(registry, args.host, args.port)
    except WsiHeatmapsError as exc:
        print(f"view-heatmaps: {exc}", file=sys.stderr)
        return 2
    url = f"http://{'localhost' if args.host == '127.0.0.1' else args.host}:{server.server_port}/"
    print(f"view-heatmaps: serving {len(registry.entries)} slide(s) at {url} (Ctrl-C to stop)", flush=True)
    if args.open:
        threading.Timer(0.5, webbrowser.open, (url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
