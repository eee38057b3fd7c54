"""Benchmark: a full-resolution (vis_level 0) heatmap of a 100,000 x 80,000 px slide as a
pyramidal TIFF, written by the command line ``create_heatmaps.py --scores ... --vis_level 0``.
Targets (issue 14): <= 60 s wall and <= 1 GiB peak RSS on the 2-core machine. Tiles without heatmap
colour are stored empty by default (``--tiff_background empty``); ``--tiff_background slide``
measures the full render for comparison.

Steps:

1. ``../shared/tools/make_large_slide.py`` writes the slide (4 levels, downsample 4^k, JPEG q80)
   into a work directory (kept and reused with ``--workdir``). The tool needs the ``imagecodecs``
   package; when it is missing, a stand-in module (OpenCV JPEG, 4:2:0 YCbCr - the same layout,
   plus tifffile's pure-Python codecs) is put on its ``PYTHONPATH``.
2. ``prepare``: tissue contours (``segment_tissue``, CLAM defaults), patches 256 px step 128 at
   level 0 (``patch_grid``), smooth pseudo-random scores -> ``scores_coords.h5`` and
   ``{slide_id}_tissue.geojson`` beside it (the command line's tissue mask).
3. ``render`` runs ``create_heatmaps.py --scores scores_coords.h5 --slide SLIDE --output
   heatmap_level0.tiff --vis_level 0 --alpha 0.4 --cmap jet`` as the only child of a fresh
   process, so the children's ``ru_maxrss`` is the command's own peak RSS: it reads the patches,
   opens the slide, renders the CLAM-semantics heatmap (tissue mask, rank percentiles) at
   vis_level 0 band by band and writes a JPEG pyramidal TIFF; the TIFF is then reopened with
   OpenSlide for its level sizes and mpp.

Run from the repository root:
``python benchmarks/bench_level0_tiff.py [--width 100000 --height 80000] [--workdir DIR]``
(use ``--width 20000 --height 16000`` for a quick run).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOOL = REPO.parent / "shared" / "tools" / "make_large_slide.py"
SLIDE_QUALITY = 80   # JPEG quality of the slide's tiles (the tool's default; YCbCr 4:2:0)
SHIM = '''"""Stand-in for imagecodecs (benchmark only): OpenCV JPEG, tifffile's Python codecs."""
import importlib.util, os
_spec = importlib.util.find_spec("tifffile")
_path = os.path.join(list(_spec.submodule_search_locations)[0], "_imagecodecs.py")
_mod_spec = importlib.util.spec_from_file_location("_tifffile_pure_codecs", _path)
_mod = importlib.util.module_from_spec(_mod_spec)
_mod_spec.loader.exec_module(_mod)
globals().update({k: v for k, v in vars(_mod).items() if not k.startswith("__")})
__version__ = "0-opencv-shim"

def jpeg_encode(data, level=None, subsampling=None, colorspace=None, outcolorspace=None, **kw):
    import cv2
    img = cv2.cvtColor(data, cv2.COLOR_RGB2BGR) if data.ndim == 3 and data.shape[2] == 3 else data
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(level or 75),
                                         cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                         cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420])
    return buf.tobytes()
'''


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB (VmHWM, else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_slide(workdir: Path, width: int, height: int) -> Path:
    out = workdir / f"large_{width}x{height}.tiff"
    if out.exists():
        print(f"slide: reusing {out}")
        return out
    env = dict(os.environ)
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        shim = workdir / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "imagecodecs.py").write_text(SHIM)
        env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", "")])
    t = time.perf_counter()
    part = out.with_name(out.name + ".part.tiff")
    subprocess.run([sys.executable, str(TOOL), "--width", str(width), "--height", str(height),
                    "--quality", str(SLIDE_QUALITY), "-o", str(part)], check=True, env=env, stdout=subprocess.DEVNULL)
    part.replace(out)
    print(f"slide: {out} written in {time.perf_counter() - t:.1f} s "
          f"({out.stat().st_size / 2**20:.0f} MiB)")
    return out


def prepare(slide_path: Path, workdir: Path) -> None:
    import numpy as np
    from wsi_core.formats import write_coords_h5
    from wsi_core import open_slide
    from wsi_core.patching import patch_grid
    from wsi_core.tissue import SegmentationParams, save_contours_geojson, segment_tissue

    t = time.perf_counter()
    with open_slide(slide_path) as slide:
        contours = segment_tissue(slide, SegmentationParams())
        t_seg = time.perf_counter() - t
        coords = patch_grid(contours, level_dimensions=slide.level_dimensions,
                            level_downsamples=slide.level_downsamples, patch_level=0,
                            patch_size=256, step_size=128)
    t_grid = time.perf_counter() - t - t_seg
    x, y = coords[:, 0] / 7000.0, coords[:, 1] / 5000.0
    rng = np.random.default_rng(0)
    scores = (np.sin(x) * np.cos(y * 1.3) + 0.3 * np.sin(3 * x + y)
              + 0.2 * rng.standard_normal(len(coords))).astype(np.float32)
    write_coords_h5(workdir / "scores_coords.h5", coords, scores, patch_size=256, step=128,
                    patch_level=0, encoder="synthetic")
    save_contours_geojson(contours, workdir / f"{slide_path.stem}_tissue.geojson", properties={})
    print(f"prepare: {len(contours)} tissue contours in {t_seg:.1f} s; {len(coords):,} patches "
          f"(256 px, step 128) in {t_grid:.1f} s; prepare peak RSS {peak_rss_mib():.0f} MiB")


def render(slide_path: Path, workdir: Path, background: str) -> dict:
    import h5py
    import openslide
    import tifffile

    out = workdir / "heatmap_level0.tiff"
    cmd = [sys.executable, str(REPO / "create_heatmaps.py"), "--scores", str(workdir / "scores_coords.h5"),
           "--slide", str(slide_path), "--output", str(out), "--vis_level", "0", "--alpha", "0.4",
           "--cmap", "jet", "--tiff_background", background]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    with h5py.File(workdir / "scores_coords.h5", "r") as f:
        n = len(f["coords"])
    with tifffile.TiffFile(out) as tf:
        counts = tf.pages[0].databytecounts
        empty, tiles = sum(1 for c in counts if c == 0), len(counts)
        tile_side, tile_px = tf.pages[0].tilewidth, tf.pages[0].tilewidth * tf.pages[0].tilelength
        encoded_px = sum(sum(1 for c in pg.databytecounts if c) * pg.tilewidth * pg.tilelength for pg in tf.pages)
    with tifffile.TiffFile(slide_path) as tf:
        slide_tile_side = tf.pages[0].tilewidth
    osr = openslide.OpenSlide(str(out))
    result = {
        "empty_tiles": empty, "tiles": tiles, "tile_side": tile_side, "slide_tile_side": slide_tile_side,
        "level0_coloured_px": (tiles - empty) * tile_px, "encoded_px": encoded_px, "out_bytes": out.stat().st_size,
        "render_seconds": round(seconds, 1), "peak_rss_mib": round(child.ru_maxrss / 1024),
        "cpu_seconds": round(child.ru_utime + child.ru_stime, 1),
        "patches": n, "out_mib": round(out.stat().st_size / 2**20),
        "levels": [list(d) for d in osr.level_dimensions],
        "mpp": [osr.properties.get("openslide.mpp-x"), osr.properties.get("openslide.mpp-y")],
        "cpus": os.cpu_count(),
    }
    osr.close()
    return result


def limit_lines(res: dict, workdir: Path) -> list[str]:
    """The command's decode, encode and write rates (averaged over its wall time; the stages overlap
    in threads, so each is a lower bound on that stage's own rate) vs ceilings measured now."""
    import inspect

    from hw_limits import disk_write_mbs, jpeg_mpxs, rate_line, usable_cores
    from vis_utils.tiled import render_heatmap_tiff

    s, cores = res["render_seconds"], usable_cores()
    q_out = inspect.signature(render_heatmap_tiff).parameters["quality"].default
    dec = jpeg_mpxs("decode", threads=cores, size=res["slide_tile_side"], quality=SLIDE_QUALITY, subsampling="420")
    enc = jpeg_mpxs("encode", threads=cores, size=res["tile_side"], quality=q_out, subsampling="444")
    return [
        rate_line("slide decoded", res["level0_coloured_px"] / s / 1e6, "Mpx/s", dec, f"measured {cores}-thread JPEG decode",
                  f"at least the px under the coloured level-0 tiles; cv2.imdecode of the slide's {res['slide_tile_side']}-px "
                  f"q{SLIDE_QUALITY} 4:2:0 tiles"),
        rate_line("tiles encoded", res["encoded_px"] / s / 1e6, "Mpx/s", enc, f"measured {cores}-thread JPEG encode",
                  f"the non-empty tiles of every level; cv2.imencode of the heatmap's {res['tile_side']}-px q{q_out} 4:4:4 tiles"),
        rate_line("TIFF written", res["out_bytes"] / s / 1e6, "MB/s", disk_write_mbs(workdir), "measured disk write",
                  "256 MiB + fsync in the work directory"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=100_000)
    ap.add_argument("--height", type=int, default=80_000)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the slide and outputs here (default: a temporary directory)")
    ap.add_argument("--tiff_background", choices=["empty", "slide"], default="empty",
                    help="empty (default): background tiles stored zero-byte; slide: every tile rendered")
    ap.add_argument("--stage", choices=["all", "render"], default="all", help=argparse.SUPPRESS)
    ap.add_argument("--slide", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage == "render":
        print(json.dumps(render(a.slide, a.workdir, a.tiff_background)))
        return
    tmp = None
    if a.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_level0_tiff_")
        a.workdir = Path(tmp.name)
    a.workdir.mkdir(parents=True, exist_ok=True)
    try:
        slide = make_slide(a.workdir, a.width, a.height)
        prepare(slide, a.workdir)
        load_before = os.getloadavg()
        proc = subprocess.run([sys.executable, __file__, "--stage", "render", "--slide", str(slide),
                               "--workdir", str(a.workdir), "--tiff_background", a.tiff_background],
                              check=True, capture_output=True, text=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"create_heatmaps.py --scores ... --vis_level 0 --tiff_background {a.tiff_background}, "
              f"{a.width}x{a.height}: {res['render_seconds']} s wall (target <= 60), {res['cpu_seconds']} CPU-s, "
              f"peak RSS {res['peak_rss_mib']} MiB (target <= 1024), {res['patches']:,} patches, "
              f"{res['empty_tiles']:,} of {res['tiles']:,} level-0 tiles empty, "
              f"TIFF {res['out_mib']} MiB, {len(res['levels'])} levels {res['levels'][:3]}..., "
              f"mpp {res['mpp']}, {res['cpus']} CPUs, load average before {load_before[0]:.1f}, "
              f"after (1/5/15 min) {load}")
        for line in limit_lines(res, a.workdir):
            print("  " + line)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
