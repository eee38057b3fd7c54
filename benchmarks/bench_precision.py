"""resnet50_trunc encoder throughput on this CPU by precision: fp32 contiguous (CLAM's), fp32
channels-last, and bf16 autocast + channels-last (what ``precision: auto`` picks on a CPU with
native bf16), each beside the CPU's peak and the measured GEMM ceiling for that precision.

The encoder alone on pre-read, pre-transformed 224-px patches of the TCGA slide (interleaved runs,
median), so the figure is the compute limit of the feature pass:

    python benchmarks/bench_precision.py [--patches 96] [--batch 32] [--repeats 3] [--weights W.pth]
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
sys.path.insert(0, str(Path(__file__).parent))
SHARED = Path(os.environ.get("WSI_HEATMAPS_SHARED", ROOT.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=str(SHARED / "clam_reference/checkpoints/resnet50_trunc_seed0.safetensors"))
    args = ap.parse_args()
    import torch

    from hw_limits import gflop_per_patch, limit_line, load_line
    from models import create_encoder, resolve_precision, tune_cpu_allocator
    from models.extract import PatchDataset

    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    enc = create_encoder("resnet50_trunc", target_img_size=224, weights_path=args.weights)
    slide = SHARED / "slides/tcga-cr-7395-01a-01-ts1.svs"
    side = int(np.ceil(np.sqrt(args.patches)))
    coords = np.array([[1500 + 128 * (i % side), 1200 + 128 * (i // side)] for i in range(args.patches)], np.int64)
    ds = PatchDataset(slide, coords, patch_level=0, patch_size=256, transform=enc.transform)
    x = torch.stack([ds[i] for i in range(len(coords))])
    gflop = gflop_per_patch(enc.model)
    print(f"resnet50_trunc 224 px ({gflop:.2f} GFLOP/patch), {args.patches} patches of the TCGA slide, batch "
          f"{args.batch}, {args.threads} threads; precision auto on this CPU -> {resolve_precision('auto', 'cpu')}; "
          f"{load_line()}")
    modes = {"fp32 contiguous (CLAM)": (torch.contiguous_format, None),
             "fp32 channels-last": (torch.channels_last, None),
             "bf16 channels-last (auto)": (torch.channels_last, torch.bfloat16)}
    times: dict[str, list[float]] = {k: [] for k in modes}
    feats = {}
    model = enc.model.eval()
    for rep in range(args.repeats + 1):          # the first round warms every mode up
        for name, (fmt, dtype) in modes.items():
            m, xx = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                t = time.perf_counter()
                out = torch.cat([m(xx[i:i + args.batch]) for i in range(0, len(xx), args.batch)]).float()
                dt = time.perf_counter() - t
            if rep:
                times[name].append(dt)
            feats[name] = out.numpy()
    ref = feats["fp32 contiguous (CLAM)"]
    for name, ts in times.items():
        rate = len(x) / float(np.median(ts))
        f = feats[name]
        cos = (f * ref).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(ref, axis=1)
        prec = "bf16" if "bf16" in name else "fp32"
        print(f"  {name:26s} {rate:6.1f} patches/s (x{rate * np.median(times['fp32 contiguous (CLAM)']) / len(x):4.2f}); "
              f"cosine vs CLAM's fp32 min {cos.min():.5f}\n    {limit_line(rate, gflop, prec)}")
    print(load_line())


if __name__ == "__main__":
    main()
