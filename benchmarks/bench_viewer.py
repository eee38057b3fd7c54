"""Benchmark of the web viewer (issue 10): tile latency, first paint, server memory.

Targets: p95 latency of 254-px Deep Zoom tiles <= 50 ms for the slide and for a level-0 heatmap TIFF
of a 100,000 x 80,000 slide, <= 100 ms for tiles drawn on the fly from a score file of 1,000,000
patches; first paint of the page <= 1 s; server RSS <= 500 MiB.

Steps (``--workdir`` keeps the files for the next run):

1. ``prepare``: the slide (``../shared/tools/make_large_slide.py``, through
   ``bench_level0_tiff.make_slide``); a score file of 1000 x 1000 = 1,000,000 patches of 256 px at
   steps (W / 1000, H / 1000) with smooth pseudo-random scores (``write_coords_h5``: patch size in
   its attributes; the server finds the slide's ``{slide_id}_tissue.geojson`` beside it when
   ``bench_level0_tiff.py`` ran in the same work directory, else it segments the slide at start);
   a level-0 heatmap TIFF (``render_heatmap_tiff``, vis_level 0, JPEG) drawn from a
   coarser score file (patches 256 px at step 256) - the TIFF's tile latency does not depend on how
   many patches drew it.
2. ``serve``: the viewer in its own process (``viewer.cli.serve``) with two entries: slide + TIFF,
   slide + score file.
3. Tiles over HTTP (one keep-alive connection, sequential, cold LRU: every tile asked once): N
   random tiles from the 4 deepest Deep Zoom levels (level 0 to downsample 8: what a reader sees
   zoomed in) per layer: slide, TIFF heatmap, on-the-fly heatmap; then the overview levels of the
   on-the-fly heatmap (from the one-tile level up, coarse first: a tile covers up to all N patches)
   reported apart.
4. First paint: headless Chromium (Debian's, via playwright) opens the page; time from navigation
   to both viewers drawn (``wsiViewer.fullyLoaded()``), for each entry, server warm but tiles cold.
   A screenshot of the zoomed-in view goes to ``WORKDIR/viewer_screenshot.png``.
5. Server memory: VmRSS and VmHWM of the server process after start, after the tiles and at the end.

Run from the repository root: ``python benchmarks/bench_viewer.py [--width 100000 --height 80000]
[--workdir DIR] [--tiles 200]``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SERVER = """
import sys, threading
from pathlib import Path
from viewer.cli import serve
from viewer.registry import Entry, Registry
from viewer.sources import limit_arenas
limit_arenas()                       # as view-heatmaps does, before the sources are read
slide, tiff, scores = (Path(p) for p in sys.argv[1:4])
reg = Registry([Entry("tiff", slide.stem, slide, tiff, "tiff"), Entry("scores", slide.stem, slide, scores, "scores")])
reg.heatmap("tiff"); reg.heatmap("scores")
srv = serve(reg, "127.0.0.1", 0)
print(srv.server_port, flush=True)
srv.serve_forever()
"""


def prepare(workdir: Path, width: int, height: int) -> tuple[Path, Path, Path]:
    import numpy as np
    from bench_level0_tiff import make_slide

    from vis_utils.heatmap import HeatmapStyle
    from vis_utils.tiled import render_heatmap_tiff
    from wsi_core.formats import write_coords_h5
    from wsi_core.slide import open_slide

    workdir.mkdir(parents=True, exist_ok=True)
    slide = make_slide(workdir, width, height)

    def smooth(coords: np.ndarray) -> np.ndarray:
        x, y = coords[:, 0] / width, coords[:, 1] / height
        rng = np.random.default_rng(0)
        return (np.sin(6 * x) * np.cos(4 * y) + 0.2 * rng.standard_normal(len(coords))).astype(np.float32)

    scores = workdir / "scores_1M_coords.h5"
    if not scores.exists():
        sx, sy = width // 1000, height // 1000
        gx, gy = np.meshgrid(np.arange(1000) * sx, np.arange(1000) * sy)
        coords = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
        write_coords_h5(scores, coords, smooth(coords), patch_size=256, step=sx, patch_level=0, encoder="bench")
    tiff = workdir / "heatmap_level0.tiff"
    if not tiff.exists():
        gx, gy = np.meshgrid(np.arange(0, width - 255, 256), np.arange(0, height - 255, 256))
        coords = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
        t = time.perf_counter()
        with open_slide(slide) as s:
            render_heatmap_tiff(s, smooth(coords), coords, patch_size_level0=(256, 256), vis_level=0, contours=None,
                                style=HeatmapStyle(segment=False), convert_to_percentiles=True, out_path=tiff)
        print(f"heatmap TIFF: {len(coords):,} patches, {time.perf_counter() - t:.0f} s, "
              f"{tiff.stat().st_size / 2**20:.0f} MiB")
    return slide, tiff, scores


def _get(conn: http.client.HTTPConnection, url: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    conn.request("GET", url)
    r = conn.getresponse()
    data = r.read()
    dt = time.perf_counter() - t
    if r.status != 200:
        raise RuntimeError(f"{url}: {r.status} {data[:200]!r}")
    return dt, data


def _levels(width: int, height: int, tile: int = 254) -> list[tuple[int, int, int]]:
    """(level, columns, rows) of every Deep Zoom level, deepest last."""
    import math
    top = math.ceil(math.log2(max(width, height)))
    out = []
    for lvl in range(top + 1):
        d = 2 ** (top - lvl)
        w, h = math.ceil(width / d), math.ceil(height / d)
        out.append((lvl, math.ceil(w / tile), math.ceil(h / tile)))
    return out


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def tile_latencies(port: int, width: int, height: int, n: int) -> dict:
    levels = _levels(width, height)
    rng = random.Random(0)
    deep = levels[-4:]
    picks = [(lvl, rng.randrange(c), rng.randrange(r)) for lvl, c, r in (rng.choice(deep) for _ in range(n))]
    picks = list(dict.fromkeys(picks))
    first = max(lvl for lvl, nc, nr in levels if nc == nr == 1)     # the page's lowest level
    overview = [(lvl, c, r) for lvl, nc, nr in levels[first:-4] for r in range(nr) for c in range(nc)][:n]
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = {}
    for name, url in (("slide", "/tiles/tiff/slide/{}/{}_{}.jpeg"), ("heatmap TIFF", "/tiles/tiff/heatmap/{}/{}_{}.jpeg"),
                      ("on the fly (1M patches)", "/tiles/scores/heatmap/{}/{}_{}.jpeg")):     # what the page asks
        _get(conn, url.format(*picks[0]))                       # warm-up: first plan / first decoder
        ts = [_get(conn, url.format(*p))[0] * 1000 for p in picks[1:]]
        out[name] = {"n": len(ts), "p50_ms": _p(ts, 50), "p95_ms": _p(ts, 95), "max_ms": max(ts)}
    ts = [_get(conn, "/tiles/scores/heatmap/{}/{}_{}.jpeg?cmap=coolwarm".format(*p))[0] * 1000 for p in overview]
    out[f"on the fly, overview (levels {overview[0][0]}-{overview[-1][0]}, coarse first)"] = {"n": len(ts), "p50_ms": _p(ts, 50), "p95_ms": _p(ts, 95),
                                                             "max_ms": max(ts)}
    conn.close()
    return out


def first_paint(port: int, shot: Path) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright not installed"}
    exe = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium")) if p and os.path.isfile(p)), None)
    if exe is None:
        return {"skipped": "no chromium"}
    out = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        for eid, style in (("tiff", ""), ("scores", "&x=50000&y=40000&w=3000"), ("scores", "")):
            page = b.new_page(viewport={"width": 1400, "height": 800})
            t = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/?slide={eid}{style}")
            page.wait_for_function("window.wsiViewer && window.wsiViewer.ready && window.wsiViewer.fullyLoaded()",
                                   timeout=60_000, polling=10)
            out[f"{eid}{' (zoomed in, deep link)' if style else ' (whole slide)'}"] = round(time.perf_counter() - t, 3)
            if eid == "scores" and style:
                page.screenshot(path=str(shot))
            page.close()
        b.close()
    return out


def rss(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    val = {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in status if ln.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mib": round(val["VmRSS"]), "peak_rss_mib": round(val["VmHWM"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=100_000)
    ap.add_argument("--height", type=int, default=80_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_viewer"))
    ap.add_argument("--tiles", type=int, default=200)
    ap.add_argument("--prepare-only", action="store_true")
    a = ap.parse_args()
    slide, tiff, scores = prepare(a.workdir, a.width, a.height)
    if a.prepare_only:
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(slide), str(tiff), str(scores)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(proc.stdout.readline())
        start = time.perf_counter() - t
        res = {"slide": f"{a.width} x {a.height} ({slide.name})",  "server_start_s": round(start, 2),
               "rss_after_start": rss(proc.pid)}
        res["tiles"] = tile_latencies(port, a.width, a.height, a.tiles)
        res["rss_after_tiles"] = rss(proc.pid)
        res["first_paint_s"] = first_paint(port, a.workdir / "viewer_screenshot.png")
        res["server_memory"] = rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    res["loadavg"] = os.getloadavg()
    res["cpus"] = os.cpu_count()
    print(json.dumps(res, indent=1))
    print("targets: slide / TIFF tiles p95 <= 50 ms, on-the-fly p95 <= 100 ms, first paint <= 1 s, RSS <= 500 MiB")


if __name__ == "__main__":
    main()
