#!/bin/sh
# Run on the device machine (one NVIDIA GPU, no package index), after prepare.sh here:
#   run(command="sh benchmarks/gpu/job_queue.sh", carry=[".device"], timeout_s=600)
# Issue 29's one-model figure where a step's cost grows little with its rows: two jobs
# of 24 prompts on the random-weight 1.1B (every layer on the GPU, 128 tokens each) at
# --parallel 16, as one group against two `tui-batch run` one after the other, with peak
# RSS; then the model's tokens/s with 1, 4, 8 and 16 rows. Output: $OUT/job-queue-gpu.txt.
set -eu
. benchmarks/gpu/build.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/job-queue-gpu.txt"
cd "$repo"
PYTHONPATH="$repo" PYTHONUNBUFFERED=1 python benchmarks/job_queue.py --skip-fleet --skip-keys \
  --model tiny --gpu-layers -1 --threads 4 --max-tokens 128 --repeat 2 2>&1 \
  | tee -a "$out/job-queue-gpu.txt"
