"""resnet50_trunc throughput on this CPU, with and without the allocator setting of
``models.runtime.tune_cpu_allocator``, and whether the features stay bit-identical.

Each configuration runs in a fresh process (the allocator setting cannot be undone):

    python benchmarks/bench_encoder.py [--patches 128] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
from models import create_encoder, tune_cpu_allocator
tuned = sys.argv[2] == "tuned"
if tuned:
    tune_cpu_allocator()
bs, n, out = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.manual_seed(0)
enc = create_encoder("resnet50_trunc", weights_path=sys.argv[6]) if sys.argv[6] != "-" else None
if enc is None:
    from models.encoders.nets import ResNet50Trunc
    m = ResNet50Trunc().eval()
else:
    m = enc.model.eval()
x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    m(x[:bs])
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    feats = torch.cat([m(x[i:i + bs]) for i in range(0, n, bs)])
    dt, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
torch.save(feats, out)
print(json.dumps({"patches_per_s": n / dt, "sys_s": r1.ru_stime - r0.ru_stime, "user_s": r1.ru_utime - r0.ru_utime,
                  "minor_faults": r1.ru_minflt - r0.ru_minflt}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=str(Path(__file__).resolve().parents[2] / "shared/clam_reference/checkpoints/resnet50_trunc_seed0.safetensors"))
    args = ap.parse_args()
    import torch
    from hw_limits import gflop_per_patch, limit_line, load_line
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models.encoders.nets import ResNet50Trunc

    torch.set_num_threads(args.threads)   # the peak and the GEMM ceiling for the children's threads
    gflop = gflop_per_patch(ResNet50Trunc().eval(), 224)
    weights = args.weights if Path(args.weights).is_file() else "-"
    with tempfile.TemporaryDirectory() as tmp:
        feats = {}
        print(f"resnet50_trunc, 224 px, fp32, {args.threads} threads, {args.patches} patches")
        for mode in ("default", "tuned"):
            for bs in (64, 16):
                out = f"{tmp}/{mode}_{bs}.pt"
                res = subprocess.run([sys.executable, "-c", CHILD, str(args.threads), mode, str(bs), str(args.patches), out, weights],
                                     capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
                r = json.loads(res.stdout.strip().splitlines()[-1])
                feats[(mode, bs)] = torch.load(out)
                print(f"  allocator {mode:7s} batch {bs:3d}: {r['patches_per_s']:6.1f} patches/s  "
                      f"(user {r['user_s']:.1f} s, sys {r['sys_s']:.1f} s, {r['minor_faults']:,} minor faults)")
                print(f"    {limit_line(r['patches_per_s'], gflop, 'fp32')}")
        ref = feats[("default", 64)]
        worst = max(float((f - ref).abs().max()) for f in feats.values())
        print(f"max abs feature difference across the four runs: {worst}")
        print(f"{gflop:.2f} GFLOP per patch (torch.utils.flop_counter); {load_line()}")


if __name__ == "__main__":
    main()
