#!/bin/sh
# Run on the device machine (one NVIDIA GPU, no package index), after prepare.sh here:
#   run(command="sh benchmarks/gpu/run.sh", carry=[".device"], timeout_s=600)
# Builds llama-cpp-python for CUDA (about 3.5 minutes on 16 cores), writes the
# random-weight 1.1B model (about 30 s), then runs the throughput table of issue 9:
# 128 prompts x 128 tokens, the plain loop against --parallel 16, 64, 128, 255, with the
# time per step split into the GPU decode and the rest. Output: $OUT/throughput-gpu.txt.
set -eu
. benchmarks/gpu/build.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/throughput-gpu.txt"
cd "$repo"
PYTHONPATH="$repo" PYTHONUNBUFFERED=1 python benchmarks/throughput.py --models tiny \
  --gpu-layers -1 --threads 4 --prompts 128 --max-tokens 128 \
  --parallel 16 64 128 255 --invariant --cache-dir /tmp/bench 2>&1 | tee -a "$out/throughput-gpu.txt"
