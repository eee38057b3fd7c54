"""GPU throughput of the feature pass: the encoder alone vs end to end from a large slide.

For each encoder (resnet50_trunc, uni_v1 = ViT-L/16, uni_v2 = ViT-H/14; random weights, the
published architecture and transform) on one CUDA device:

* **encoder alone**: synthetic (b, 256, 256, 3) uint8 batches already on the device, through the
  device transform (resize to 224 + normalise) and the model under bf16 autocast; patches/s, GPU
  utilisation (``nvidia-smi`` sampled every 0.2 s in a thread), peak GPU memory per patch, and the
  achieved GFLOP/s (FLOPs per patch from ``torch.utils.flop_counter``) beside the GPU's peak;
* **end to end**: ``models.extract.extract_features_dense`` (reader workers with their own slide
  handles, uint8 windows in pinned memory, non-blocking upload, the transform on the device) over
  the tissue grid of a large slide at overlap 0 / 0.9 / 0.95 (256-px patches at level 0), each
  case cut to about ``--case-s`` seconds by its patch count (a short probe run sizes it);
  minutes per slide = the slide's whole tissue-grid patch count / the end-to-end rate, for the
  slide given and scaled to a 100,000 x 80,000 px slide (the issue's reference size);
* optionally (``--compile``) resnet50_trunc alone under ``torch.compile``.

Prints a compact table and writes every figure as JSON to ``--out``::

    python benchmarks/bench_gpu.py --slide big.tiff --out gpu.json [--budget-s 330]
    python benchmarks/bench_gpu.py --slide small.tiff --out smoke.json --smoke   # CPU, tiny counts
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.encode import cuda_batch_size  # noqa: E402
from models.encoders import Encoder, autocast_context, build_transform, device_transform, encoder_info  # noqa: E402
from models.extract import extract_features_dense  # noqa: E402
from wsi_core.patching import dense_step  # noqa: E402
from wsi_core.slide import open_slide  # noqa: E402

PATCH = 256
REF_SLIDE_PX = 100_000 * 80_000
#: dense peak TFLOP/s (no sparsity): bf16 tensor cores, TF32 tensor cores, plain fp32 (vendor sheets)
PEAKS = {"H200": (989.4, 494.7, 66.9), "H100 PCIe": (756.0, 378.0, 51.2), "H100 NVL": (835.0, 417.5, 60.0),
         "H100": (989.4, 494.7, 66.9), "A100": (312.0, 156.0, 19.5), "L40S": (362.0, 183.0, 91.6),
         "A10G": (70.0, 35.0, 31.2), "L4": (121.0, 60.0, 30.3), "RTX 4090": (165.2, 82.6, 82.6),
         "RTX 3090": (71.0, 35.6, 35.6)}


def gpu_peaks(name: str) -> dict | None:
    """Peak TFLOP/s of the device named ``name`` (longest matching key of :data:`PEAKS`)."""
    keys = [k for k in PEAKS if all(part in name for part in k.split())]
    if not keys:
        return None
    bf16, tf32, fp32 = PEAKS[max(keys, key=len)]
    return {"bf16_tflops": bf16, "tf32_tflops": tf32, "fp32_tflops": fp32}


class UtilSampler:
    """GPU utilisation (%) sampled every ``period`` s in a thread: nvidia-smi, else torch.cuda."""

    def __init__(self, device: torch.device, period: float = 0.2) -> None:
        self.device, self.period = device, period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.smi = shutil.which("nvidia-smi")
        self.index = device.index if device.index is not None else 0

    def _one(self) -> float | None:
        if self.smi:
            try:
                out = subprocess.run([self.smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", str(self.index)], capture_output=True, text=True, timeout=2)
                return float(out.stdout.strip().splitlines()[0])
            except (subprocess.SubprocessError, ValueError, IndexError, OSError):
                return None
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001 - pynvml missing
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            v = self._one()
            if v is not None:
                self.samples.append(v)

    def __enter__(self) -> "UtilSampler":
        if self.device.type == "cuda":
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def random_encoder(name: str, device: torch.device, precision: str) -> Encoder:
    """``name``'s architecture with random weights (N(0, 0.02) for ViTs, filled on the device)."""
    from models.encoders.nets import ResNet50Trunc
    from models.encoders.vit import build_vit

    info = encoder_info(name)
    torch.manual_seed(0)
    if name == "resnet50_trunc":
        model = ResNet50Trunc().to(device)
    else:
        model = build_vit(name, device="meta").to_empty(device=device)
        g = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02, generator=g)
    return Encoder(name=name, model=model.eval(), transform=build_transform(info.transform, info.input_size),
                   dim=info.dim, weights_source="random", input_size=info.input_size, is_cnn=info.is_cnn,
                   precision=precision)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_patch(enc: Encoder, device: torch.device) -> float:
    """FLOPs (2 per multiply-add) of one 224-px patch through the model (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, enc.input_size, enc.input_size, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        enc.model(x)
    return float(fc.get_total_flops())


def encoder_alone(enc: Encoder, device: torch.device, *, batch: int, seconds: float, min_batches: int,
                  compile: bool = False) -> dict:
    """Patches/s of uint8 batches already on the device through the device transform + model."""
    dt = device_transform(enc.transform)
    fmt = torch.channels_last if enc.is_cnn else torch.contiguous_format
    model = enc.model.to(device, memory_format=fmt)
    if compile:
        model = torch.compile(model)
    amp = autocast_context(device, enc.precision)
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randint(0, 256, (batch, PATCH, PATCH, 3), dtype=torch.uint8, device=device, generator=g)

    def step() -> torch.Tensor:
        with amp:
            return model(dt(x).contiguous(memory_format=fmt)).float()

    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(2):  # warm-up (cuDNN autotune, compilation)
            step()
        sync(device)
        warm_s = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        n = 0
        with UtilSampler(device) as util:
            t0 = time.perf_counter()
            while n < min_batches or time.perf_counter() - t0 < seconds:
                step()
                n += 1
                if n % 4 == 0:
                    sync(device)
            sync(device)
            dt_s = time.perf_counter() - t0
    out = {"batch": batch, "patches": n * batch, "seconds": round(dt_s, 3),
           "patches_per_s": round(n * batch / dt_s, 1), "gpu_util_pct": util.mean, "warmup_s": round(warm_s, 2)}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
        out["peak_mem_per_patch_mb"] = round(peak / batch / 2**20, 2)
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def tissue_mask(slide_path: Path) -> tuple[np.ndarray, float]:
    """(h, w) bool tissue mask of the slide's smallest level (HSV saturation > 15, as CLAM's
    default) and that level's downsample."""
    import cv2

    with open_slide(slide_path) as s:
        lvl = len(s.level_dimensions) - 1
        w, h = s.level_dimensions[lvl]
        rgb = np.ascontiguousarray(s.read_region((0, 0), lvl, (w, h)))[..., :3]
        ds = s.dimensions[0] / w
    sat = cv2.medianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1], 7)
    return sat > 15, ds


def tissue_grid(mask: np.ndarray, ds: float, dims: tuple[int, int], step: int, *, roi: tuple[int, int, int, int] | None = None,
                count_only: bool = False) -> np.ndarray | int:
    """Patches (N, 2) int64 level-0 (x, y) of the ``step`` grid whose centre is tissue, in
    row-major order, inside ``roi`` (x0, y0, x1, y1 level-0 px) if given; or only their count
    (row by row: no (N, 2) array for a whole slide at 95 % overlap)."""
    x0, y0, x1, y1 = roi or (0, 0, dims[0], dims[1])
    xs = np.arange(x0, max(x0, x1 - PATCH) + 1, step, dtype=np.int64)
    ys = np.arange(y0, max(y0, y1 - PATCH) + 1, step, dtype=np.int64)
    mx = np.minimum(((xs + PATCH // 2) / ds).astype(np.int64), mask.shape[1] - 1)
    my = np.minimum(((ys + PATCH // 2) / ds).astype(np.int64), mask.shape[0] - 1)
    if count_only:
        return int(sum(int(mask[r, mx].sum()) for r in my))
    keep = mask[np.ix_(my, mx)]
    yy, xx = np.nonzero(keep)
    return np.stack([xs[xx], ys[yy]], axis=1)


def roi_coords(mask: np.ndarray, ds: float, dims: tuple[int, int], step: int, n: int) -> np.ndarray:
    """About ``n`` tissue patches of the ``step`` grid in a square around the densest tissue."""
    import cv2

    dens = cv2.blur(mask.astype(np.float32), (15, 15))
    cy, cx = np.unravel_index(int(np.argmax(dens)), dens.shape)
    cx, cy = cx * ds, cy * ds
    side = PATCH + (int(np.ceil(np.sqrt(n))) - 1) * step
    while True:
        roi = (int(max(0, cx - side / 2)), int(max(0, cy - side / 2)),
               int(min(dims[0], cx + side / 2)), int(min(dims[1], cy + side / 2)))
        c = tissue_grid(mask, ds, dims, step, roi=roi)
        if len(c) >= n or (roi[0] == 0 and roi[1] == 0 and roi[2] == dims[0] and roi[3] == dims[1]):
            return c[:n]
        side = int(side * 1.25) + step


def end_to_end(enc: Encoder, slide: Path, coords: np.ndarray, device: torch.device, *, batch: int,
               workers: int | None, compile: bool = False) -> dict:
    """Patches/s of extract_features_dense over ``coords`` (the device transform on CUDA)."""
    sync(device)
    with UtilSampler(device) as util:
        t0 = time.perf_counter()
        feats = extract_features_dense(slide, coords, patch_level=0, patch_size=PATCH, encoder=enc,
                                       batch_size_extract=batch, num_workers=workers, device=device,
                                       precision=enc.precision, progress=False,
                                       channels_last=enc.is_cnn, compile=compile)
        sync(device)
        dt_s = time.perf_counter() - t0
    assert np.isfinite(feats).all() and feats.shape == (len(coords), enc.dim)
    return {"patches": len(coords), "seconds": round(dt_s, 3), "patches_per_s": round(len(coords) / dt_s, 1),
            "gpu_util_pct": util.mean}


def e2e_case(enc: Encoder, slide: Path, mask: np.ndarray, ds: float, dims: tuple[int, int], dev: torch.device, *,
             ov: float, step: int, batch: int, workers: int | None, rate: float, args: argparse.Namespace,
             slide_patches: int) -> dict:
    """One end-to-end case; outside ``--smoke`` a short probe (worker start-up included, so it
    underestimates the rate) sizes the timed run to at most about ``--case-s`` seconds."""
    if args.smoke:
        e = end_to_end(enc, slide, roi_coords(mask, ds, dims, step, 3 * batch), dev, batch=batch, workers=workers)
    else:
        probe_n = int(min(slide_patches, max(2 * batch, rate * 1.5)))
        probe = end_to_end(enc, slide, roi_coords(mask, ds, dims, step, probe_n), dev, batch=batch, workers=workers)
        n = int(min(slide_patches, max(4 * batch, probe["patches_per_s"] * args.case_s)))
        e = end_to_end(enc, slide, roi_coords(mask, ds, dims, step, n), dev, batch=batch, workers=workers)
        e["probe"] = probe
    e["step"] = step
    return e


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", required=True, help="a large slide (make_large_slide.py)")
    ap.add_argument("--out", required=True, help="JSON path for every figure")
    ap.add_argument("--encoders", nargs="+", default=None,
                    help="default: resnet50_trunc uni_v1 uni_v2 (--smoke: resnet50_trunc)")
    ap.add_argument("--overlaps", nargs="+", type=float, default=[0.0, 0.9, 0.95])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--workers", type=int, default=None, help="reader processes (default: automatic)")
    ap.add_argument("--extra-workers", type=int, default=None,
                    help="also run resnet50_trunc end to end with this many readers (overlap 0 and 0.9)")
    ap.add_argument("--batch", type=int, default=None, help="default: models.encode.cuda_batch_size")
    ap.add_argument("--alone-s", type=float, default=6.0, help="seconds per encoder-alone figure")
    ap.add_argument("--case-s", type=float, default=10.0, help="target seconds per end-to-end case")
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop starting new cases after this")
    ap.add_argument("--compile", action="store_true", help="also resnet50_trunc alone under torch.compile")
    ap.add_argument("--smoke", action="store_true", help="tiny counts (checks the script, e.g. on CPU)")
    args = ap.parse_args(argv)
    args.encoders = args.encoders or (["resnet50_trunc"] if args.smoke else ["resnet50_trunc", "uni_v1", "uni_v2"])

    t_start = time.perf_counter()
    dev = torch.device(args.device)
    prec = args.precision or ("bf16" if dev.type == "cuda" else "fp32")
    slide = Path(args.slide)
    with open_slide(slide) as s:
        dims = s.dimensions
    mask, ds = tissue_mask(slide)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    res: dict = {"device": name, "peaks": gpu_peaks(name) if dev.type == "cuda" else None,
                 "torch": torch.__version__, "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
                 "slide": {"path": str(slide), "dims": dims, "tissue_fraction": round(float(mask.mean()), 3)},
                 "precision": prec, "smoke": args.smoke, "encoders": {}}
    counts = {}
    for ov in args.overlaps:
        step = dense_step(PATCH, ov)
        n = tissue_grid(mask, ds, dims, step, count_only=True)
        counts[ov] = {"step": step, "slide_patches": n, "ref_slide_patches": int(round(n * REF_SLIDE_PX / (dims[0] * dims[1])))}
    res["grid"] = {str(k): v for k, v in counts.items()}
    print(f"device {name}; slide {dims[0]}x{dims[1]} tissue {mask.mean():.0%}; precision {prec}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)

    def over_budget() -> bool:
        return time.perf_counter() - t_start > args.budget_s

    for enc_name in args.encoders:
        if over_budget():
            res["encoders"][enc_name] = {"skipped": "budget"}
            continue
        t0 = time.perf_counter()
        enc = random_encoder(enc_name, dev, prec)
        r: dict = {"build_s": round(time.perf_counter() - t0, 2)}
        res["encoders"][enc_name] = r
        try:
            r["gflop_per_patch"] = round(flops_per_patch(enc, dev) / 1e9, 3)
        except Exception as exc:  # noqa: BLE001 - the rates still count without the FLOPs
            r["gflop_per_patch"], r["flops_error"] = None, f"{type(exc).__name__}: {exc}"[:300]
        batch = args.batch or (4 if args.smoke else cuda_batch_size(enc, patch_px=PATCH, precision=prec, device=dev))
        r["batch"] = batch
        try:
            r["alone"] = encoder_alone(enc, dev, batch=batch, seconds=0 if args.smoke else args.alone_s,
                                       min_batches=2 if args.smoke else 8)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: report, go on with the next encoder
            r["skipped"] = f"{type(exc).__name__}: {exc}"[:400]
            print(f"{enc_name}: {r['skipped']}", flush=True)
            enc = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            continue
        gf = r["gflop_per_patch"] or 0.0
        rate = r["alone"]["patches_per_s"]
        r["alone"]["gflops_achieved"] = round(rate * gf, 1)
        print(f"{enc_name}: alone {rate:.0f} patches/s (batch {batch}, util {r['alone']['gpu_util_pct']}%)", flush=True)
        if enc_name == "resnet50_trunc" and dev.type == "cuda" and prec != "fp32" and not over_budget():
            fp = Encoder(**{**enc.__dict__, "precision": "fp32"})
            try:
                r["alone_fp32"] = encoder_alone(fp, dev, batch=batch, seconds=args.alone_s / 2, min_batches=4)
            except Exception as exc:  # noqa: BLE001
                r["alone_fp32"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            r["alone_fp32"]["gflops_achieved"] = round(r["alone_fp32"]["patches_per_s"] * gf, 1)
        if args.compile and enc_name == "resnet50_trunc" and not over_budget():
            try:
                r["alone_compiled"] = encoder_alone(enc, dev, batch=batch, seconds=args.alone_s, min_batches=8,
                                                    compile=True)
            except Exception as exc:  # noqa: BLE001 - report, keep benchmarking
                r["alone_compiled"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        r["e2e"] = {}
        cases = [(ov, args.workers) for ov in args.overlaps]
        if args.extra_workers and enc_name == "resnet50_trunc":
            cases += [(ov, args.extra_workers) for ov in args.overlaps if ov in (0.0, 0.9)]
        for ov, workers in cases:
            key = str(ov) if workers == args.workers else f"{ov} w{workers}"
            if over_budget():
                r["e2e"][key] = {"skipped": "budget"}
                continue
            try:
                r["e2e"][key] = e = e2e_case(enc, slide, mask, ds, dims, dev, ov=ov, step=counts[ov]["step"],
                                             batch=batch, workers=workers, rate=rate, args=args,
                                             slide_patches=counts[ov]["slide_patches"])
            except Exception as exc:  # noqa: BLE001 - one failed case (e.g. /dev/shm full) is reported
                r["e2e"][key] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                print(f"  {key}: {r['e2e'][key]['error']}", flush=True)
                continue
            e["workers"] = workers
            e["vs_alone_pct"] = round(100 * e["patches_per_s"] / rate, 1)
            e["gflops_achieved"] = round(e["patches_per_s"] * gf, 1)
            e["min_per_slide"] = round(counts[ov]["slide_patches"] / e["patches_per_s"] / 60, 2)
            e["min_per_ref_slide"] = round(counts[ov]["ref_slide_patches"] / e["patches_per_s"] / 60, 2)
            print(f"  overlap {key}: {e['patches_per_s']:.0f} patches/s ({e['vs_alone_pct']}% of alone, "
                  f"util {e['gpu_util_pct']}%), {e['min_per_ref_slide']} min per 100k x 80k slide", flush=True)
        del enc
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    res["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print_table(res)
    return 0


def print_table(res: dict) -> None:
    """One row per (encoder, case): patches/s, % of alone, GPU util, GFLOP/s vs peak, min/slide."""
    pk = res.get("peaks") or {}
    peak = pk.get("bf16_tflops" if res["precision"] in ("bf16", "fp16") else "tf32_tflops")
    print(f"\n{res['device']} ({res['precision']}; peak {peak or '?'} TFLOP/s dense); slide "
          f"{res['slide']['dims'][0]}x{res['slide']['dims'][1]}, tissue {res['slide']['tissue_fraction']:.0%}")
    print(f"{'encoder':<15}{'case':<17}{'patches/s':>10}{'%alone':>8}{'util%':>7}{'TFLOP/s':>9}{'%peak':>7}"
          f"{'slide pts':>11}{'min/slide':>10}{'min/100kx80k':>13}")
    for name, r in res["encoders"].items():
        if "alone" not in r:
            print(f"{name:<15}skipped ({r.get('skipped')})")
            continue
        rows = [("alone", r["alone"], None)]
        if "patches_per_s" in r.get("alone_fp32", {}):
            rows.append(("alone fp32", r["alone_fp32"], "fp32"))
        if "patches_per_s" in r.get("alone_compiled", {}):
            rows.append(("alone compile", r["alone_compiled"], None))
        rows += [(f"overlap {k}", e, None) for k, e in r["e2e"].items()]
        for case, e, p in rows:
            if "patches_per_s" not in e:
                print(f"{name:<15}{case:<17}skipped ({e.get('skipped') or e.get('error')})")
                continue
            tf = e["patches_per_s"] * (r["gflop_per_patch"] or 0.0) / 1e3
            pkv = pk.get("tf32_tflops") if p == "fp32" else peak
            share = f"{100 * tf / pkv:.1f}" if pkv else "-"
            ov = case.split()[1] if case.startswith("overlap") else None
            g = res["grid"].get(ov, {}) if ov else {}
            print(f"{name:<15}{case:<17}{e['patches_per_s']:>10.0f}{e.get('vs_alone_pct', 100.0):>8}"
                  f"{str(e.get('gpu_util_pct')):>7}{tf:>9.1f}{share:>7}{g.get('slide_patches', ''):>11}"
                  f"{e.get('min_per_slide', ''):>10}{e.get('min_per_ref_slide', ''):>13}")
    print(f"total {res['total_s']} s; load {res['loadavg_end'][0]:.2f} (start {res['loadavg'][0]:.2f})")


if __name__ == "__main__":
    sys.exit(main())
