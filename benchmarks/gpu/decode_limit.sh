#!/bin/sh
# Run on the device machine (one NVIDIA GPU, no package index), after prepare.sh here:
#   run(command="sh benchmarks/gpu/decode_limit.sh", carry=[".device"], timeout_s=600)
# Issue 31's figures on the random-weight 1.1B Q4_0, every layer on the GPU:
# 1. benchmarks/decode_limit.py: llama-batched-bench, tui-batch and the plain loop at
#    N = 1, 16, 64, 128, 255 (128 prompt tokens, 128 generated), with the step split;
# 2. benchmarks/structured.py: the schema's cost per token at --parallel 16, and
#    --parallel 16 against --parallel 0 with it (PARTS=decode to skip 2 and 3);
# 3. benchmarks/scores.py: --repeats 5 against five runs one after the other.
# Builds first (about 3.5 minutes; nothing on a machine still warm from a call before).
# Output: $OUT/decode-limit-gpu.txt. MODEL=light and NS="1 16" change part 1's model and
# N (a quick look at the rest of a step).
set -eu
. benchmarks/gpu/build.sh
log="$out/decode-limit-gpu.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$log"
cd "$repo/benchmarks"
export PYTHONPATH="$repo" PYTHONUNBUFFERED=1
# shellcheck disable=SC2086
python decode_limit.py --batched-bench "$batched_bench" --model "${MODEL:-tiny}" \
  --n ${NS:-1 16 64 128 255} --gpu-layers -1 \
  --threads 4 --device-greedy --cache-dir /tmp/bench 2>&1 | grep -v "^llama_context\|^ggml_\|^load" | tee -a "$log"
if [ "${PARTS:-all}" = all ]; then
  python structured.py --model tiny --gpu-layers -1 --threads 4 --prompts 200 --skip-remote \
    --results 0 --cache-dir /tmp/bench 2>&1 | tee -a "$log"
  python scores.py --skip-scale --model tiny --gpu-layers -1 --threads 4 --prompts 64 \
    --cache-dir /tmp/bench 2>&1 | tee -a "$log"
fi
