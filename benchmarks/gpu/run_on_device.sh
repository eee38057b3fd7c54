#!/usr/bin/env bash
# GPU figures of issue 14 item 5, run ON THE GPU MACHINE from the repo root (no package index there).
# Needs, carried along: .whl (../shared/tools/device_wheels.sh) and .gpu_carry/ holding copies of
# ../shared/tools/make_large_slide.py and ../shared/slides/CMU-1-Small-Region.svs (its tissue source).
# Writes into $OUT: bench_gpu.json, bench_gpu.log, make_slide.log, env.txt, pytest_gpu.log.
#   bash benchmarks/gpu/run_on_device.sh            # the GPU run (about 6 minutes on an H100/H200)
#   OUT=/tmp/o bash benchmarks/gpu/run_on_device.sh --smoke   # the same steps, tiny, on a CPU
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit
set -uo pipefail
OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
SMOKE=${1:-}
W=40000; H=32000; THREADS=$(nproc); BENCH=(--budget-s 230 --case-s 10 --alone-s 6 --extra-workers $(( $(nproc) - 2 )))
if [ "$SMOKE" = "--smoke" ]; then W=6000; H=5000; BENCH=(--smoke --device cpu --workers 1); fi
SLIDE=/tmp/gpu_bench_${W}x${H}.tiff
{ date -u; nproc; free -g; df -h /dev/shm /tmp; nvidia-smi || true
  python3 -c "import torch, timm, sys; print(sys.version, torch.__version__, timm.__version__, torch.cuda.is_available())"
} > "$OUT/env.txt" 2>&1
t0=$(date +%s)
if [ ! -s "$SLIDE" ]; then
  timeout 90 python3 .gpu_carry/make_large_slide.py --width $W --height $H -o "$SLIDE" \
    --source .gpu_carry/CMU-1-Small-Region.svs --threads "$THREADS" > "$OUT/make_slide.log" 2>&1 \
  || { echo "slide ${W}x${H} failed or too slow; falling back to 20000x16000" | tee -a "$OUT/make_slide.log"
       W=20000; H=16000; SLIDE=/tmp/gpu_bench_${W}x${H}.tiff
       python3 .gpu_carry/make_large_slide.py --width $W --height $H -o "$SLIDE" \
         --source .gpu_carry/CMU-1-Small-Region.svs --threads "$THREADS" >> "$OUT/make_slide.log" 2>&1 || exit 1; }
fi
echo "slide ${W}x${H} made in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/make_slide.log"
python3 benchmarks/bench_gpu.py --slide "$SLIDE" --out "$OUT/bench_gpu.json" "${BENCH[@]}" 2>&1 | tee "$OUT/bench_gpu.log"
rc=${PIPESTATUS[0]}
# the GPU tests of the new path (skip without CUDA); only when pytest is there
if [ "$SMOKE" != "--smoke" ] && python3 -c "import pytest" 2>/dev/null; then
  timeout 45 python3 -m pytest -q -x -p no:cacheprovider tests/models/test_gpu_path.py > "$OUT/pytest_gpu.log" 2>&1 || true
fi
echo "done in $(( $(date +%s) - t0 )) s, bench rc $rc" | tee -a "$OUT/bench_gpu.log"
exit $rc
