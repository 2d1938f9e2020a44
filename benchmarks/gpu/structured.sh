#!/bin/sh
# Run on the device machine after prepare.sh here:
#   run(command="sh benchmarks/gpu/structured.sh", carry=[".device"], timeout_s=600)
# Builds llama-cpp-python for CUDA (about 3.5 minutes on 16 cores), writes the
# random-weight 1.1B model, then benchmarks/structured.py on it, every layer on the GPU:
# the schema described against enforced at --parallel 16, and --parallel 0 with it.
# Output: $OUT/structured-gpu.txt.
set -eu
. benchmarks/gpu/build.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/structured-gpu.txt"
cd "$repo"
PYTHONPATH="$repo" PYTHONUNBUFFERED=1 python benchmarks/structured.py --model tiny \
  --gpu-layers -1 --threads 4 --prompts 200 --skip-remote --results 0 \
  --cache-dir /tmp/bench 2>&1 | tee -a "$out/structured-gpu.txt"
