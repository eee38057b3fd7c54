"""Fidelity of the fast modes on REAL ImageNet ResNet-50 weights and the real CLAM demo model.

(a) bf16 (``precision: auto`` on a CPU with native bf16: autocast + channels-last) vs fp32 (CLAM's
    contiguous fp32), on the real slides of ../shared/slides (CMU-1-Small-Region, the TCGA slide,
    the two CPTAC slides), up to ``--per-slide`` tissue patches of each slide's 256-px level-0
    grid (seeded sample): feature cosine, Spearman of the CLAM demo model's attention (its
    attention head on these features), the bag's class probabilities, patches/s of each.
(b) fully convolutional vs the exact patch-wise pass (both fp32) on the TCGA slide at overlap
    0.5 / 0.9 / 0.95: feature cosine and attention Spearman on ``--subset`` patches sampled over
    the whole tissue grid (the fully-convolutional pass runs over the whole grid, the exact one
    over the sample), heatmap pixel difference on a ``--roi``-px square ROI (every ROI patch in
    both modes; the heatmap rendered by vis_utils.heatmap.render_heatmap, percentiles, jet,
    alpha 1), and the speed-up (patches/s of each mode).

Weights: ``../shared/tools/imagenet_resnet50/get_resnet50_imagenet.sh OUT.pth`` (Keras' ImageNet
ResNet-50 v1; run as v1: the stride on the 1x1 conv of each stage's first block, see its README).

    python benchmarks/bench_fidelity.py --weights OUT.pth [--per-slide 192] [--subset 384] [--roi 640]
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
SLIDES = ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs",
          "reconstructed/real_geometry/C3L-01663-21.tiff", "reconstructed/real_geometry/C3L-03262-22.tiff")
TCGA = "tcga-cr-7395-01a-01-ts1.svs"
SIZE = 256


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def imagenet_trunc(weights: str):
    """resnet50_trunc with the ImageNet weights, strides moved to the 1x1 convs (ResNet v1)."""
    from models import create_encoder

    enc = create_encoder("resnet50_trunc", target_img_size=224, weights_path=weights)
    for layer in (enc.model.layer2, enc.model.layer3):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    return enc


def tissue_grid(slide, step: int, roi=None) -> np.ndarray:
    from wsi_core import patch_grid
    from wsi_core.tissue import SegmentationParams, segment_tissue

    contours = segment_tissue(slide, SegmentationParams(a_t=1, a_h=1))
    return patch_grid(contours, level_dimensions=slide.level_dimensions, level_downsamples=slide.level_downsamples,
                      patch_level=0, patch_size=SIZE, step_size=step, roi=roi)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def part_a(args, enc, mil, gflop) -> None:
    from scipy.stats import spearmanr

    from hw_limits import limit_line
    from models import attention_for_class, predict_bag
    from models.extract import extract_features_dense
    from wsi_core import open_slide

    print(f"\n(a) bf16 (autocast + channels-last) vs fp32 (contiguous), up to {args.per_slide} patches per slide "
          "(256 px, level 0, overlap 0), ImageNet resnet50_trunc, CLAM demo model attention:")
    rng = np.random.default_rng(0)
    tot = {"fp32": [0, 0.0], "bf16": [0, 0.0]}
    for name in SLIDES:
        path = SHARED / "slides" / name
        with open_slide(path) as slide:
            grid = tissue_grid(slide, SIZE)
        coords = grid[np.sort(rng.choice(len(grid), min(args.per_slide, len(grid)), replace=False))]
        kw = dict(patch_level=0, patch_size=SIZE, encoder=enc, batch_size_extract=32, num_workers=0, progress=False)
        extract_features_dense(path, coords[:8], precision="bf16", channels_last=True, **kw)  # warm-up
        f32, t32 = timed(lambda: extract_features_dense(path, coords, precision="fp32", **kw))
        bf, tbf = timed(lambda: extract_features_dense(path, coords, precision="bf16", channels_last=True, **kw))
        tot["fp32"][0] += len(coords); tot["fp32"][1] += t32
        tot["bf16"][0] += len(coords); tot["bf16"][1] += tbf
        cos = _cos(f32, bf)
        a32, abf = attention_for_class(mil, f32, cls=0), attention_for_class(mil, bf, cls=0)
        p32, pbf = predict_bag(mil, f32).probs, predict_bag(mil, bf).probs
        print(f"  {Path(name).name:32s} {len(coords):4d} of {len(grid):5d} patches: cosine mean {cos.mean():.5f} "
              f"min {cos.min():.5f}; attention Spearman {spearmanr(a32, abf).statistic:.4f}, max|d att| "
              f"{np.abs(a32 - abf).max():.3f} (att range {np.ptp(a32):.2f}); probs fp32 {np.round(p32, 4).tolist()} "
              f"bf16 {np.round(pbf, 4).tolist()}; {len(coords) / t32:5.1f} vs {len(coords) / tbf:5.1f} patches/s")
    for p, (n, t) in tot.items():
        print(f"  all slides {p}: {n / t:5.1f} patches/s end to end (read + transform + encoder); "
              f"encoder {limit_line(n / t, gflop, p)}")


def part_b(args, enc, mil, gflop) -> None:
    from scipy.stats import spearmanr

    from hw_limits import limit_line
    from models import attention_for_class
    from models.extract import extract_features_dense
    from models.fully_conv import extract_features_fully_conv
    from vis_utils.heatmap import HeatmapStyle, render_heatmap
    from wsi_core import dense_step, open_slide

    path = SHARED / "slides" / TCGA
    print(f"\n(b) fully convolutional (tile {args.tile}, margin {args.margin}) vs exact patch-wise, fp32, {TCGA}:")
    kw = dict(patch_level=0, patch_size=SIZE, encoder=enc, progress=False)
    rng = np.random.default_rng(1)
    slide = open_slide(path)
    grid0 = tissue_grid(slide, SIZE)
    cx, cy = np.median(grid0, axis=0).astype(int)
    roi = (int(cx - args.roi // 2), int(cy - args.roi // 2), int(cx + args.roi // 2), int(cy + args.roi // 2))
    extract_features_fully_conv(path, grid0[:4], tile_size=args.tile, margin=args.margin, **kw)  # warm-up
    for ov in args.overlaps:
        step = dense_step(SIZE, ov)
        grid = tissue_grid(slide, step)
        fc, t_fc = timed(lambda: extract_features_fully_conv(path, grid, tile_size=args.tile, margin=args.margin, **kw))
        pick = np.sort(rng.choice(len(grid), min(args.subset, len(grid)), replace=False))
        ex, t_ex = timed(lambda: extract_features_dense(path, grid[pick], batch_size_extract=32, num_workers=0, **kw))
        cos = _cos(ex, fc[pick])
        rho = spearmanr(attention_for_class(mil, ex, cls=0), attention_for_class(mil, fc[pick], cls=0)).statistic
        # heatmap of the ROI: every ROI patch in both modes
        rgrid = tissue_grid(slide, step, roi=roi)
        r_ex = extract_features_dense(path, rgrid, batch_size_extract=32, num_workers=0, **kw)
        r_fc = extract_features_fully_conv(path, rgrid, tile_size=args.tile, margin=args.margin, **kw)
        rrho = spearmanr(attention_for_class(mil, r_ex, cls=0), attention_for_class(mil, r_fc, cls=0)).statistic
        style = HeatmapStyle(alpha=1.0, blank_canvas=True, segment=False, overlap=ov)
        img = [render_heatmap(slide, attention_for_class(mil, f, cls=0), rgrid, patch_size_level0=(SIZE, SIZE),
                              vis_level=0, contours=None, style=style, convert_to_percentiles=True, roi=roi)
               for f in (r_ex, r_fc)]
        d = np.abs(img[0].astype(np.int16) - img[1].astype(np.int16))
        r_e, r_f = len(pick) / t_ex, len(grid) / t_fc
        print(f"  overlap {ov:4.2f} (step {step:3d}): {len(grid):6d} patches; on {len(pick)} sampled: cosine mean "
              f"{cos.mean():.4f} min {cos.min():.4f}, attention Spearman {rho:.4f}; ROI {args.roi} px ({len(rgrid)} "
              f"patches): Spearman {rrho:.4f}, heatmap mean |dRGB| {d.mean():.1f}/255, pixels off by > 10 % "
              f"{100 * (d.max(axis=2) > 25).mean():.1f} %\n"
              f"    exact {r_e:6.1f} patches/s, fully-conv {r_f:7.0f} patches/s over the whole grid "
              f"({t_fc:5.1f} s) -> {r_f / r_e:5.1f}x; exact whole grid would take {len(grid) / r_e / 60:5.1f} min; "
              f"exact encoder {limit_line(r_e, gflop, 'fp32')}")
    slide.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="ImageNet ResNet-50 state dict (get_resnet50_imagenet.sh)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-slide", type=int, default=192)
    ap.add_argument("--subset", type=int, default=384)
    ap.add_argument("--roi", type=int, default=640, help="side of the heatmap ROI, level-0 px")
    ap.add_argument("--tile", type=int, default=2048)
    ap.add_argument("--margin", type=int, default=64)
    ap.add_argument("--part", choices=["a", "b", "ab"], default="ab")
    ap.add_argument("--overlaps", type=float, nargs="+", default=[0.5, 0.9, 0.95], help="overlaps of part (b)")
    args = ap.parse_args()
    if not Path(args.weights).is_file():
        raise SystemExit(f"{args.weights} not found; make it with "
                         f"{SHARED / 'tools/imagenet_resnet50/get_resnet50_imagenet.sh'} {args.weights}")
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from hw_limits import gflop_per_patch, load_line
    from models import load_mil_checkpoint, tune_cpu_allocator

    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    enc = imagenet_trunc(args.weights)
    mil = load_mil_checkpoint(SHARED / "mil/clam_demo/s_0_checkpoint.pt", model_type="clam_sb")
    gflop = gflop_per_patch(enc.model)
    print(f"ImageNet resnet50_trunc (ResNet-50 v1 to layer3) at 224 px: {gflop:.2f} GFLOP/patch; "
          f"CLAM demo model (CLAM-SB, LUAD vs LSCC); {args.threads} threads; {load_line()}")
    if "a" in args.part:
        part_a(args, enc, mil, gflop)
    if "b" in args.part:
        part_b(args, enc, mil, gflop)
    print(f"\n{load_line()}")


if __name__ == "__main__":
    main()
