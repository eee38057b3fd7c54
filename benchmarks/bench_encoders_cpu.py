"""CPU throughput of the encoder zoo, fp32 against bf16 autocast (random weights, no downloads).

For each encoder: the published architecture with random weights (ViTs built on the meta device
and filled with N(0, 0.02), so no slow initialisation), a warm-up batch, then ``--batches``
timed batches of ``--batch`` random 224-px inputs under ``torch.inference_mode`` and
``Encoder.autocast``. Prints one JSON line per (encoder, precision) with patches/s and the
cosine similarity of the bf16 features to the fp32 ones:

    python benchmarks/bench_encoders_cpu.py [--encoders uni_v1 ctranspath] [--batch 8]
                                            [--batches 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models.encoders import autocast_context, encoder_info  # noqa: E402
from models.encoders.nets import ClsMeanTokens, ResNet50Trunc  # noqa: E402
from models.encoders.vit import VIT_ARCHS, build_ctranspath, build_vit  # noqa: E402


sys.path.insert(0, str(Path(__file__).parent))
from hw_limits import gflop_per_patch, limit_line  # noqa: E402

def random_model(name: str) -> torch.nn.Module:
    """Architecture of ``name`` with random weights, eval mode, on the CPU."""
    if name in VIT_ARCHS:
        net = build_vit(name, device="meta").to_empty(device="cpu")
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0.0, 0.02, generator=g)
        return (ClsMeanTokens(net) if name == "virchow2" else net).eval()
    if name == "ctranspath":
        return build_ctranspath().eval()
    if name == "resnet50_trunc":
        return ResNet50Trunc().eval().to(memory_format=torch.channels_last)
    raise SystemExit(f"no random build for {name}")


def run(name: str, *, batch: int, batches: int) -> list[dict]:
    model = random_model(name)
    fmt = torch.channels_last if encoder_info(name).is_cnn else torch.contiguous_format
    size = encoder_info(name).input_size
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=fmt)
    rows, ref = [], None
    gflop = gflop_per_patch(model, size)
    for precision in ("fp32", "bf16"):
        with torch.inference_mode(), autocast_context("cpu", precision):
            model(x)  # warm-up
            t = time.perf_counter()
            for _ in range(batches):
                feats = model(x).float()
            dt = time.perf_counter() - t
        ref = feats if ref is None else ref
        cos = torch.nn.functional.cosine_similarity(feats, ref).min().item()
        rows.append({"encoder": name, "precision": precision, "batch": batch,
                     "patches_per_s": round(batch * batches / dt, 2), "min_cosine_vs_fp32": round(cos, 5),
                     "threads": torch.get_num_threads(), "loadavg_1min": os.getloadavg()[0],
                     "gflop_per_patch": round(gflop, 2),
                     "limit": limit_line(batch * batches / dt, gflop, precision)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=["uni_v1", "ctranspath", "resnet50_trunc"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    for name in args.encoders:
        for row in run(name, batch=args.batch, batches=args.batches):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
