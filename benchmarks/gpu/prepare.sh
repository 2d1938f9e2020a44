#!/bin/sh
# Run here, where pip reaches the package registries: fills .device/ (git-ignored) with
# what benchmarks/gpu/run.sh needs on the device machine, which has no package index:
# Python 3.12 wheels, and llama-cpp-python's sdist trimmed to what a CUDA build uses
# (about 5 MB; the working tree that travels is limited to 64 MiB).
set -eu
cd "$(dirname "$0")/../.."
dest=.device
mkdir -p "$dest/wheels"
platforms="--platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp $platforms -d "$dest/wheels" \
  numpy jinja2 markupsafe diskcache typing-extensions scikit-build-core pathspec \
  packaging platformdirs gguf llguidance jsonschema jsonschema-specifications referencing \
  rpds-py attrs pyyaml tqdm regex certifi
work=$(mktemp -d)
python3 -m pip download -q --no-deps --no-binary=:all: -d "$work" "llama-cpp-python==0.3.36"
tar -xzf "$work"/llama_cpp_python-0.3.36.tar.gz -C "$work"
src="$work/llama_cpp_python-0.3.36"
vendor="$src/vendor/llama.cpp"
rm -rf "$src/docs" "$src/tests" "$src/examples" "$src/.git"
for part in models docs benches examples tests tools/ui tools/mtmd; do
  rm -rf "${vendor:?}/$part"
done
for backend in "$vendor"/ggml/src/ggml-*/; do
  case "$(basename "$backend")" in ggml-cpu | ggml-cuda) ;; *) rm -rf "$backend" ;; esac
done
tar -czf "$dest/llama-cpp-python-0.3.36-trimmed.tar.gz" -C "$work" llama_cpp_python-0.3.36
rm -rf "$work"
du -sh "$dest"
