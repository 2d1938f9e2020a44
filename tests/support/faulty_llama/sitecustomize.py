"""A llama-cpp-python build that dies on its first token, as a native build does on a CPU
that advertises AMX it cannot run: on PYTHONPATH, every `llama_decode` of the process
kills it with SIGILL (Illegal instruction). Loading a model still works, as there."""

import builtins
import os
import signal
import sys

_import = builtins.__import__


def _dies(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGILL)


def _import_then_fault(name, *args, **kwargs):
    module = _import(name, *args, **kwargs)
    low = sys.modules.get("llama_cpp.llama_cpp")
    if low is not None and hasattr(low, "llama_decode") and low.llama_decode is not _dies:
        low.llama_decode = _dies
    return module


builtins.__import__ = _import_then_fault
