#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): build, test and measure the GPU backends in
# about 8 minutes, everything under OUT (the first argument, else $OUT, else gpu-check-out).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-check-out}}"
[ $# -gt 0 ] && shift
exec python3 benchmarks/gpu_check.py --out "$out" "$@"
