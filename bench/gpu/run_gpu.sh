#!/bin/sh
# GPU check of the PyTorch reference: run ONCE on a machine with PyTorch + CUDA (no Node.js, no
# network needed), from the repository root or anywhere:  sh bench/gpu/run_gpu.sh
# Builds 3B-shape (bf16) and 270M-shape models with torch-generated weights, runs the reference on
# cuda and on cpu, compares them and prints load + forward times as a markdown table
# (also written to $OUT/gpu-results.md when $OUT is set). Takes ~2-4 minutes on an H100 box.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
"$python" -c 'import torch, numpy' 2>/dev/null || { echo "needs python3 with torch and numpy ($python)"; exit 7; }
exec "$python" "$here/gpu_check.py" --preset "${PRESETS:-3B,270M}" --tokens "${TOKENS:-16}" --threads "${THREADS:-16}" --device "${DEVICE:-auto}" "$@"
