"""Loading llama.cpp through llama-cpp-python without touching the process's terminal:
its log goes through a callback of ours (silent; it keeps the last errors for messages),
so models load with llama-cpp-python's `verbose=True`, which never swaps file
descriptors 1 and 2 (its `suppress_stdout_stderr` did, and froze the dashboard)."""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from pathlib import Path
from typing import Any

from tui_batch.core.errors import ModelError
from tui_batch.core.settings import GenerationSettings

# llama.cpp's error lines since the last load began, for the message when a load fails.
log_errors: deque[str] = deque(maxlen=4)
_log_callback: Any = None
_log_code: Any = None  # the callback's Python code, to know a frame inside it
# One load at a time: loading a `Llama` prints to `sys.stderr`, swapped while it does.
LOAD_LOCK = threading.Lock()
# ggml's log levels (ggml.h): warnings and errors are kept for messages.
_KEPT_LEVELS = (3, 4)


_backend_ready = False


def import_llama_cpp() -> Any:
    """The llama_cpp module, imported on first use, with a clear error when it is
    missing, llama.cpp's log silenced (see `_silence_log`) and its backends initialised
    once (as `Llama` does: on a CUDA build, a model loaded before that crashes)."""
    global _backend_ready
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelError(f"llama-cpp-python is not installed ({exc})") from None
    if not _backend_ready:
        llama_cpp.llama_backend_init()
        _backend_ready = True
    _silence_log(llama_cpp)
    return llama_cpp


def _silence_log(llama_cpp: Any) -> None:
    """llama.cpp logs through a callback; ours prints nothing (its lines would land on
    the user's terminal, or under the dashboard) and keeps the last errors. So models
    load with llama-cpp-python's `verbose=True`, which never calls its
    `suppress_stdout_stderr`: that swaps the process's file descriptors 1 and 2, and two
    loads at once in the dashboard's workers left its terminal on /dev/null."""
    global _log_callback, _log_code
    if _log_callback is not None:
        return

    def log(level: int, text: bytes, user_data: Any) -> None:
        if level in _KEPT_LEVELS and text:
            log_errors.append(text.decode("utf-8", "replace").strip())

    callback = llama_cpp.llama_log_callback(log)
    _log_code = log.__code__

    _log_callback = callback  # kept alive: llama.cpp holds only the pointer
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def in_log_callback(frame: Any) -> bool:
    """Whether `frame` (where a signal found the main thread) is our log callback, which
    llama.cpp calls from C: an exception raised there is printed and lost, never
    reaching the code that would stop."""
    return frame is not None and _log_code is not None and frame.f_code is _log_code


def load_failure(path: Path, exc: BaseException) -> ModelError:
    """A failed load, with what llama.cpp said about it."""
    said = "; ".join(line for line in log_errors if line)[-300:]
    return ModelError(f"Cannot load model {path}: {exc}" + (f" ({said})" if said else ""))


def quiet_model(path: Path, params: Any) -> Any:
    """llama-cpp-python's `LlamaModel` for `params`, loaded without touching the
    process's file descriptors; a ModelError saying why it cannot be."""
    import_llama_cpp()
    from llama_cpp import _internals

    if not path.is_file():
        raise ModelError(f"Model file not found: {path}")
    log_errors.clear()
    try:
        return _internals.LlamaModel(path_model=str(path), params=params, verbose=True)
    except (ValueError, RuntimeError, OSError) as exc:
        raise load_failure(path, exc) from None


def load_key(settings: GenerationSettings) -> tuple[int, tuple[Any, ...]]:
    """The threads to use, and what a loaded model must match to be reused."""
    threads = settings.effective_threads
    return threads, (settings.n_ctx, threads, settings.n_gpu_layers)
