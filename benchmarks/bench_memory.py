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


if __name__ == "__main__":
    main()
