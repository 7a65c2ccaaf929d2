#!/usr/bin/env bash
# The GPU check of the fused Triton steps (benchmarks/gpu_check.py): tests on the device,
# correctness and step times on the GPT-2-small shapes, one Markdown table for RESULTS.md.
#   benchmarks/gpu_check.sh             # on a machine with one NVIDIA GPU, < 5 minutes
#   benchmarks/gpu_check.sh --dry-run   # CPU rehearsal under Triton's interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" benchmarks/gpu_check.py "$@"
