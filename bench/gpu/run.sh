#!/usr/bin/env bash
# On the lent GPU machine (the device tool's `run`, with `.whl` carried): install the wheels from
# bench/gpu/wheels.sh beside the machine's own torch, then run the check within its budget.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
python3 bench/gpu/check.py --budget "${BUDGET:-420}" "$@" 2>&1 | tee "${OUT:-.}/gpu_check.log"
