#!/bin/sh
# Sourced by the scripts here on the device machine (no package index): a venv at
# /tmp/venv from the wheels prepare.sh put in .device/, and llama-cpp-python built for
# CUDA from its trimmed sdist (about 3.5 minutes on 16 cores), with llama.cpp's
# `llama-batched-bench` built in the same build from the same vendored llama.cpp. A
# machine still warm from an earlier call keeps both and builds nothing. Sets `repo`,
# `out` and `batched_bench`.
set -eu
repo=$(pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
build=/tmp/llama-build
batched_bench=$build/bin/llama-batched-bench
if [ -x "$batched_bench" ] && [ -x /tmp/venv/bin/python ]; then
  . /tmp/venv/bin/activate
  echo "llama-cpp-python and llama-batched-bench: built by an earlier call"
  return 0 2>/dev/null || exit 0
fi
python3 -m venv /tmp/venv
. /tmp/venv/bin/activate
pip install -q --no-index --find-links .device/wheels numpy jinja2 markupsafe diskcache \
  typing-extensions scikit-build-core pathspec packaging platformdirs llguidance \
  jsonschema jsonschema-specifications referencing rpds-py attrs pyyaml tqdm regex certifi
pip install -q --no-index --no-deps --find-links .device/wheels gguf
tar -xzf .device/llama-cpp-python-0.3.36-trimmed.tar.gz -C /tmp
src=/tmp/llama_cpp_python-0.3.36
# Of llama.cpp's tools, only batched-bench (prepare.sh trimmed some of the others away).
printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\nadd_subdirectory(batched-bench)\n' \
  > "$src/vendor/llama.cpp/tools/CMakeLists.txt"
start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL=16 CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 \
-DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON" \
  pip install -q --no-index --no-build-isolation -C build-dir="$build" "$src"
echo "llama-cpp-python and llama-batched-bench built in $(($(date +%s) - start)) s"
