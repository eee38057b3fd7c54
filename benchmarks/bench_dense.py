"""Dense (high-overlap) feature pass: band reads, worker overlap, and the fully-convolutional
shortcut, on a real slide (TCGA, JPEG 2000, level 0) with resnet50_trunc at 224 px.

Prints, for overlap 0 / 0.5 / 0.9:
  * bytes decoded per pass over the slide's tissue grid: band reads vs per-patch reads;
  * end-to-end patches/s of ``extract_features_dense`` reading in this process (the CPU default)
    and with ``--workers`` worker processes, vs the encoder alone on the same pre-read,
    pre-transformed patches (target >= 90 %), and per-patch ``extract_features``;
and at 0.9 the fully-convolutional pass: speed-up vs the exact pass and fidelity (cosine of
features, Spearman of CLAM-SB attention, seeded random model) for the shared seeded weights
and for the same weights with the residual branches switched on (timm zero-initialises the
last BN of every bottleneck, which leaves the seeded trunk almost without spatial context).

    python benchmarks/bench_dense.py [--patches 256] [--threads 2] [--workers 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("WSI_HEATMAPS_SHARED", ROOT.parent / "shared"))


def _roi_coords(grid: np.ndarray, n: int, step: int, size: int) -> np.ndarray:
    """The grid patches inside a square ROI holding about ``n`` patches, at the grid centre."""
    side = size + (int(np.ceil(np.sqrt(n))) - 1) * step
    cx, cy = np.median(grid, axis=0).astype(int)
    x0, y0 = cx - side // 2, cy - side // 2
    m = (grid[:, 0] >= x0) & (grid[:, 0] < x0 + side - size + 1) & \
        (grid[:, 1] >= y0) & (grid[:, 1] < y0 + side - size + 1)
    return grid[m]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=256, help="patches per throughput ROI")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per figure (median)")
    ap.add_argument("--slide", default=str(SHARED / "slides/tcga-cr-7395-01a-01-ts1.svs"))
    ap.add_argument("--weights", default=str(SHARED / "clam_reference/checkpoints/resnet50_trunc_seed0.safetensors"))
    args = ap.parse_args()

    import torch
    from scipy.stats import spearmanr

    from models import attention_for_class, create_encoder, create_mil_model, tune_cpu_allocator
    from models.extract import PatchDataset, extract_features, extract_features_dense
    from models.fully_conv import extract_features_fully_conv
    from wsi_core import dense_step, open_slide, patch_grid
    from wsi_core.regions import ReadStats, iter_patches_from_bands, plan_bands, planned_bytes
    from wsi_core.tissue import SegmentationParams, segment_tissue

    sys.path.insert(0, str(Path(__file__).parent))
    from hw_limits import gflop_per_patch, limit_line, load_line

    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    size, level = 256, 0
    enc = create_encoder("resnet50_trunc", target_img_size=224, weights_path=args.weights)
    gflop = gflop_per_patch(enc.model)
    slide = open_slide(args.slide)
    contours = segment_tissue(slide, SegmentationParams(a_t=1, a_h=1))
    print(f"{slide.slide_id} level {level} ({slide.dimensions[0]}x{slide.dimensions[1]}), "
          f"{size}-px patches, resnet50_trunc 224 px fp32, {args.threads} torch threads, "
          f"{args.workers} workers, batch {args.batch}, {load_line()}")

    print("\nbytes decoded per pass over the tissue grid (band reads vs one read per patch):")
    grids = {}
    for ov in (0.0, 0.5, 0.9):
        step = dense_step(size, ov)
        grid = patch_grid(contours, level_dimensions=slide.level_dimensions,
                          level_downsamples=slide.level_downsamples, patch_level=level,
                          patch_size=size, step_size=step)
        grids[ov] = (grid, step)
        bands = plan_bands(grid, downsample=1.0, patch_size=size)
        stats, t = ReadStats(), time.perf_counter()
        for _ in iter_patches_from_bands(slide, grid, patch_level=level, patch_size=size, stats=stats):
            pass
        dt = time.perf_counter() - t
        assert stats.bytes_decoded == planned_bytes(bands)
        print(f"  overlap {ov:4.2f} step {step:3d}: {len(grid):6d} patches, band reads "
              f"{stats.bytes_decoded / 1e6:7.1f} MB in {stats.regions} regions ({dt:5.2f} s), "
              f"per-patch reads {len(grid) * size * size * 3 / 1e6:8.1f} MB")

    print(f"\nthroughput on a ROI of ~{args.patches} patches, median of {args.repeats} interleaved runs "
          f"(patches/s; % of the encoder alone):")
    kw = dict(patch_level=level, patch_size=size, encoder=enc, progress=False)
    exact09 = None
    model = enc.model.eval()
    for ov in (0.0, 0.5, 0.9):
        grid, step = grids[ov]
        coords = _roi_coords(grid, args.patches, step, size)
        n = len(coords)
        ds = PatchDataset(args.slide, coords, patch_level=level, patch_size=size, transform=enc.transform)
        x = torch.stack([ds[i] for i in range(n)])
        with torch.inference_mode():
            model(x[:args.batch])  # warm-up
        times: dict[str, list[float]] = {k: [] for k in ("alone", "dense in-process", "dense workers", "per-patch")}
        for _ in range(args.repeats):
            with torch.inference_mode():
                t = time.perf_counter()
                alone = torch.cat([model(x[i:i + args.batch]) for i in range(0, n, args.batch)])
                times["alone"].append(time.perf_counter() - t)
            for key, workers in (("dense in-process", 0), ("dense workers", args.workers)):
                t = time.perf_counter()
                dense = extract_features_dense(args.slide, coords, batch_size_extract=args.batch,
                                               num_workers=workers, **kw)
                times[key].append(time.perf_counter() - t)
            t = time.perf_counter()
            extract_features(args.slide, coords, batch_size=args.batch, num_workers=0, **kw)
            times["per-patch"].append(time.perf_counter() - t)
        med = {k: float(np.median(v)) for k, v in times.items()}
        figures = "  ".join(f"{k} {n / v:5.1f} ({100 * med['alone'] / v:3.0f} %)" for k, v in med.items()
                            if k != "alone")
        print(f"  overlap {ov:4.2f}: {n:4d} patches  encoder alone {n / med['alone']:5.1f}  {figures}  "
              f"max|dense - alone| {np.abs(dense - alone.numpy()).max():.1e}\n"
              f"    encoder alone {limit_line(n / med['alone'], gflop, 'fp32')}")
        if ov == 0.9:
            exact09, coords09, t_exact09 = dense, coords, med["dense in-process"]

    print("\nfully convolutional at overlap 0.90 (tile 2048, margin 64, after one warm-up call) vs "
          "the exact dense pass:")
    mil = (torch.manual_seed(0), create_mil_model("clam_sb", n_classes=2, in_dim=1024).eval())[1]
    for label in ("shared seeded weights", "residual branches on (bn3 gamma = 1)"):
        if label.startswith("residual"):
            for name, mod in enc.model.named_modules():
                if name.endswith("bn3"):
                    mod.weight.data.fill_(1.0)
            t = time.perf_counter()
            exact09 = extract_features_dense(args.slide, coords09, batch_size_extract=args.batch,
                                             num_workers=0, **kw)
            t_exact09 = time.perf_counter() - t
        extract_features_fully_conv(args.slide, coords09, tile_size=2048, margin=64, **kw)  # warm-up
        t = time.perf_counter()
        fc = extract_features_fully_conv(args.slide, coords09, tile_size=2048, margin=64, **kw)
        t_fc = time.perf_counter() - t
        cos = _cos(exact09, fc)
        rel = np.linalg.norm(exact09 - fc) / np.linalg.norm(exact09)
        att_e = attention_for_class(mil, exact09, cls=0)
        att_f = attention_for_class(mil, fc, cls=0)
        rho = spearmanr(att_e, att_f).statistic
        big = _roi_coords(grids[0.9][0], 4 * args.patches, grids[0.9][1], size)
        t = time.perf_counter()
        extract_features_fully_conv(args.slide, big, tile_size=2048, margin=64, **kw)
        t_big = time.perf_counter() - t
        print(f"  {label}: {len(coords09)} patches exact {t_exact09:5.1f} s, fully-conv "
              f"{t_fc:5.2f} s -> {t_exact09 / t_fc:5.1f}x; on {len(big)} patches "
              f"{len(big) / t_big:6.0f} patches/s = {len(big) / t_big / (len(coords09) / t_exact09):5.1f}x\n"
              f"    cosine mean {cos.mean():.4f} min {cos.min():.4f}, relative L2 error {rel:.3f}, "
              f"Spearman of CLAM-SB attention {rho:.3f}")


if __name__ == "__main__":
    main()
