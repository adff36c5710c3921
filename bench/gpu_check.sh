#!/usr/bin/env bash
# One-shot check on a GPU machine with no network: build the extension, run the GPU tests (every
# backend), a compute-sanitizer memcheck on a small subset, `accelkernels bench --quick` (results to
# commit under bench/results/<date>-<card>/), the overhead benchmark and auto against torch
# (bench/bench_auto.py); logs and results go to
# OUT_DIR, and a short summary table is printed last. Meant to finish well inside 8 minutes.
#
# Usage: bash bench/gpu_check.sh OUT_DIR
set -uo pipefail
OUT="${1:?usage: bash bench/gpu_check.sh OUT_DIR}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export MAX_JOBS="${MAX_JOBS:-8}"
declare -a summary
run() {  # run NAME CMD...: log to OUT/NAME.log, remember pass/fail and seconds
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-22s %-5s %4ds  %s' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" $((SECONDS - t0)) "$(tail -n 1 "$OUT/$name.log" | cut -c1-80)")")
  return $rc
}

nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
git rev-parse --short HEAD > "$OUT/commit.txt" 2>/dev/null
run build pip install --no-build-isolation --no-deps -e .
run info python -m accelkernels info
run tests_gpu python -m pytest -q -rs -m gpu
run tests_rest python -m pytest -q -rs -m "not gpu"  # the rest (Triton kernels on the GPU too); no -x
if command -v compute-sanitizer > /dev/null || [ -x "$CUDA_HOME/bin/compute-sanitizer" ]; then
  SAN="$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")"
  SMALL="(cuda_matmul and (ragged or 1x1x1)) or (ladder_step and ragged and rowmajor) or (mma_sync_against and odd_m and gelu)"
  SMALL="$SMALL or ((forward_kernel_against or gradient_kernels) and s2_dil2 and nhwc and not float16) or (depthwise_kernel and nhwc and bfloat16)"
  run memcheck "$SAN" --tool memcheck --error-exitcode 1 python -m pytest -q -m gpu -k "$SMALL"
  run racecheck "$SAN" --tool racecheck --error-exitcode 1 python -m pytest -q -m gpu -k "((warptile or mma_sync_against) and (ragged or odd_m) and not silu and not relu) or ((forward_kernel_against or gradient_kernels) and implicit_gemm and bfloat16 and s2_dil2 and nhwc)"
else
  summary+=("memcheck/racecheck     skip  compute-sanitizer not found")
fi
run bench accelkernels bench --quick --ceilings --no-progress --out "$OUT/bench"
# The Hopper GEMM ladder (wgmma, wgmma_v2) against cuBLAS and the fused GELU epilogue against cuBLAS + F.gelu (issue 18's goals).
run hopper_gemm python bench/bench_hopper_gemm.py --quick --out "$OUT/hopper_gemm"
# The Hopper convolutions (wgmma forward and input gradient) against cuDNN: forward, fused bias + ReLU, backward (issue 19's goals).
run hopper_conv python bench/bench_hopper_conv.py --out "$OUT/hopper_conv"
run overhead python bench/bench_dispatch_overhead.py --device cuda --out "$OUT/overhead"
# auto measured on first use: the seed CNN and the ResNet-50 layers no slower than torch (>= 0.98), fresh table.
run auto_bf16 python bench/bench_auto.py --device cuda --dtype bf16 --budget 1 --out "$OUT/auto_bf16"
# The seed article's CNN: alpha/beta with our CUDA kernels, fp32 and bf16, batch 128 and 512, eager and compiled.
for bs in 128 512; do
  run "cifar_b$bs" python examples/cifar_cnn.py --backend cuda --steps 100 --batch-size "$bs" --no-progress --json "$OUT/cifar/b$bs.json"
done
run cifar_b128_compiled python examples/cifar_cnn.py --backend cuda --steps 100 --batch-size 128 --compile --no-progress --json "$OUT/cifar/b128_compiled.json"

echo
echo "== $(head -n 2 "$OUT/gpu.csv" | tail -n 1) | commit $(cat "$OUT/commit.txt" 2>/dev/null)"
printf '%s\n' "${summary[@]}"
if [ -f "$OUT/bench/report.md" ]; then  # the headline: α/β per provider with intervals, up to the blank line after it
  sed -n '/^| provider | α/,/^$/p' "$OUT/bench/report.md"
fi
