#!/bin/sh
# Run on the device machine after prepare.sh here:
#   run(command="sh benchmarks/gpu/structured.sh", carry=[".device"], timeout_s=600)
# Builds llama-cpp-python for CUDA (about 3.5 minutes on 16 cores), writes the
# random-weight 1.1B model, then benchmarks/structured.py on it, every layer on the GPU:
# the schema described against enforced at --parallel 16, and --parallel 0 with it.
# Output: $OUT/structured-gpu.txt.
set -eu
repo=$(pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
python3 -m venv /tmp/venv
. /tmp/venv/bin/activate
pip install -q --no-index --find-links .device/wheels numpy jinja2 markupsafe diskcache \
  typing-extensions scikit-build-core pathspec packaging platformdirs llguidance \
  jsonschema jsonschema-specifications referencing rpds-py attrs pyyaml tqdm
pip install -q --no-index --no-deps --find-links .device/wheels gguf
tar -xzf .device/llama-cpp-python-0.3.36-trimmed.tar.gz -C /tmp
start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL=16 CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 \
-DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF" \
  pip install -q --no-index --no-build-isolation /tmp/llama_cpp_python-0.3.36
echo "llama-cpp-python built in $(($(date +%s) - start)) s"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/structured-gpu.txt"
cd "$repo"
PYTHONPATH="$repo" PYTHONUNBUFFERED=1 python benchmarks/structured.py --model tiny \
  --gpu-layers -1 --threads 4 --prompts 200 --skip-remote --results 0 \
  --cache-dir /tmp/bench 2>&1 | tee -a "$out/structured-gpu.txt"
