#!/bin/sh
# Sourced by run.sh and structured.sh on the device machine (no package index): a venv
# at /tmp/venv from the wheels prepare.sh put in .device/, and llama-cpp-python built for
# CUDA from its trimmed sdist (about 3 minutes on 16 cores). Sets `repo` and `out`.
set -eu
repo=$(pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
python3 -m venv /tmp/venv
. /tmp/venv/bin/activate
pip install -q --no-index --find-links .device/wheels numpy jinja2 markupsafe diskcache \
  typing-extensions scikit-build-core pathspec packaging platformdirs llguidance \
  jsonschema jsonschema-specifications referencing rpds-py attrs pyyaml tqdm regex certifi
pip install -q --no-index --no-deps --find-links .device/wheels gguf
tar -xzf .device/llama-cpp-python-0.3.36-trimmed.tar.gz -C /tmp
start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL=16 CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 \
-DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF" \
  pip install -q --no-index --no-build-isolation /tmp/llama_cpp_python-0.3.36
echo "llama-cpp-python built in $(($(date +%s) - start)) s"
