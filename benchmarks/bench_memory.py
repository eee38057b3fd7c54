"""Peak resident memory of whole runs, each in a fresh process (the figure the kernel reports as
the child's ``ru_maxrss``), at CLAM's batch sizes:

* CLAM's two-slide reference config (``../shared/clam_reference/real_sb``, CLAM-SB, overlap 0.5,
  vis_level 0, fp32) at ``batch_size`` 64 (CLAM's config) and 384 (CLAM's demo value), beside
  CLAM's own peak for the same config (``timings.json``: ``peak_rss_MiB``);
* CLAM's heatmap demo on the two CPTAC slides with the users' own features
  (``../shared/mil/clam_demo_parisa``, batch 384, overlap 0.5, the seeded encoder with
  ``features_check: off`` so the whole fine pass is encoded).

    python benchmarks/bench_memory.py [--max-memory-gb 1.4]

Run alone on the 2-core machine: other processes do not change the peak, but make it slower.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hw_limits import ram_line

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

CHILD = r"""
import sys, json, logging
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
import torch; torch.set_num_threads(2)
from pathlib import Path
from heatmaps.run import run_config
kind, out, batch, mem = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
if kind == "reference":
    from conftest import reference_config
    cfg = reference_config(Path({shared!r}) / "clam_reference", "real_sb", out,
                           exp_arguments={{"batch_size": batch, "max_memory_gb": mem}})
else:
    from test_provided_features import cptac_config
    ck = Path({shared!r}) / "clam_reference" / "checkpoints" / "resnet50_trunc_seed0.safetensors"
    cfg = cptac_config(Path({shared!r}), out, patching_arguments={{"overlap": 0.5}},
                       exp_arguments={{"batch_size": batch, "max_memory_gb": mem}},
                       encoder_arguments={{"weights_path": str(ck), "features_check": "off"}})
s = run_config(cfg, progress=False, device="cpu")
print(json.dumps({{"processed": len(s.processed), "failed": len(s.failed), "encoded": s.n_encoded}}))
"""

# A lower bound on a run's peak: CHILD's config, then only what every run holds at once - Python
# with heatmaps imported, the tuned allocator, the MIL model and the encoder with its weights - and
# one encoder batch of the size the run uses (batch_size cut to max_memory_gb) encoded.
FLOOR = CHILD[:CHILD.index("s = run_config")] + r"""
import resource
import numpy as np
from heatmaps.context import RunContext
from models import tune_cpu_allocator
from models.checkpoints import load_mil_checkpoint
from models.encode import encode_image_patches
tune_cpu_allocator()
m = cfg.model_arguments
model = load_mil_checkpoint(m.ckpt_path, model_type=m.model_type, n_classes=m.n_classes, model_size=m.model_size,
                            drop_out=m.drop_out, embed_dim=m.embed_dim, device="cpu", model_kwargs=m.model_kwargs())
ctx = RunContext(cfg, model, {{}})
bs, p = ctx.encoder_batch_size(), cfg.patching_arguments.patch_size
encode_image_patches(ctx.encoder(), np.full((p, bs * p, 3), 200, np.uint8), np.stack([np.arange(bs) * p, np.zeros(bs, int)], 1),
                     patch_size=p, batch_size=bs, precision=ctx.precision, channels_last=ctx.channels_last)
print(json.dumps({{"batch": bs, "precision": ctx.precision, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def floor(kind: str, batch: int, mem: float) -> dict:
    """``{"batch", "precision", "peak_mib"}`` of :data:`FLOOR` in a fresh process (MiB: its own
    ``ru_maxrss``, so the children's running maximum of :func:`run` is not touched)."""
    code = FLOOR.format(repo=str(REPO), tests=str(REPO / "tests" / "heatmaps"), shared=str(SHARED))
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", code, kind, tmp, str(batch), str(mem)],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(kind: str, batch: int, mem: float) -> tuple[float, float, dict]:
    code = CHILD.format(repo=str(REPO), tests=str(REPO / "tests" / "heatmaps"), shared=str(SHARED))
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code, kind, tmp, str(batch), str(mem)],
                              capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    if peak <= before:
        raise SystemExit("run a single benchmark per process: ru_maxrss of children is a running maximum")
    return peak / 1024, seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-memory-gb", type=float, default=1.4)
    ap.add_argument("--case", choices=["reference-64", "reference-384", "cptac-384"], default=None,
                    help="one case (each case needs its own process for an exact peak)")
    args = ap.parse_args()
    clam = json.loads((SHARED / "clam_reference" / "real_sb" / "timings.json").read_text())["peak_rss_MiB"]
    cases = [args.case] if args.case else ["reference-64", "reference-384", "cptac-384"]
    if len(cases) > 1:   # each case in its own interpreter so ru_maxrss of children is that case's
        for c in cases:
            subprocess.run([sys.executable, __file__, "--case", c, "--max-memory-gb", str(args.max_memory_gb)], check=True)
        return
    kind, batch = cases[0].split("-")
    mib, s, info = run(kind, int(batch), args.max_memory_gb)
    ref = f"; CLAM {clam:.0f} MiB on the same config at batch 64" if kind == "reference" else ""
    print(f"{cases[0]}: peak RSS {mib:.0f} MiB (max_memory_gb {args.max_memory_gb}){ref}; {s:.1f} s; "
          f"{info['processed']} processed, {info['failed']} failed, {info['encoded']} patches encoded")
    low = floor(kind, int(batch), args.max_memory_gb)
    print(f"  {ram_line(mib)}; lower bound {low['peak_mib']:.0f} MiB, the peak is {mib / low['peak_mib']:.2f}x it "
          f"(a fresh process: heatmaps imported, the allocator tuned, the MIL model and the encoder loaded, one "
          f"encoder batch of {low['batch']} patches encoded in {low['precision']})")


if __name__ == "__main__":
    main()
