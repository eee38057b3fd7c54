"""``extract-features`` throughput on the CPU: patches/s end to end (segmentation, grid, reads,
resnet50_trunc at 224 px fp32, both layouts written) on a real slide of ../shared/slides.

    python benchmarks/bench_extract_features.py [--slide CMU-1-Small-Region.svs] [--patch_size 256]

Encoder weights: the seeded resnet50_trunc of ../shared/clam_reference (nothing is downloaded).
Prints the figures with the CPU count, torch threads and the load average (shared machine: the
times are upper bounds).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("WSI_HEATMAPS_SHARED", ROOT.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slide", default="CMU-1-Small-Region.svs")
    ap.add_argument("--patch_size", type=int, default=256)
    args = ap.parse_args()
    import logging

    import torch

    from heatmaps.extract_cli import main as extract

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logging.getLogger("heatmaps.extract_cli").addHandler(Keep())
    logging.getLogger("heatmaps.extract_cli").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        pl = Path(tmp) / "pl.csv"
        pl.write_text(f"slide_id\n{args.slide}\n")
        t0 = time.perf_counter()
        rc = extract(["--data_dir", str(SHARED / "slides"), "--process_list", str(pl), "--feat_dir", str(Path(tmp) / "f"),
                      "--layout", "both", "--patch_size", str(args.patch_size), "--preset", "presets/bwh_biopsy.csv",
                      "--weights_path", str(SHARED / "clam_reference/checkpoints/resnet50_trunc_seed0.safetensors"),
                      "--quiet"])
        dt = time.perf_counter() - t0
    n = sum(int(m.group(1)) for r in records if (m := re.search(r"\((\d+) patches\)", r)))
    print(f"extract-features {args.slide}: exit {rc}, {n} patches of {args.patch_size} px (resnet50_trunc 224 px fp32, "
          f"CLAM + TRIDENT layouts) in {dt:.1f} s = {n / dt:.2f} patches/s end to end (encoder built once, included)")
    loop = next((r for r in records if "patches encoded in" in r), "")
    print(f"the slide loop alone (after the encoder is built): {loop}")
    print(f"hardware: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {os.getloadavg()} "
          "(shared machine: times are upper bounds)")


if __name__ == "__main__":
    main()
