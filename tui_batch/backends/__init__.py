"""Backends turn prompts into responses. `llama_cpp` is imported only when used."""

from tui_batch.backends.base import Backend, CallableBackend, Completion, Task, TokenSink

__all__ = ["Backend", "CallableBackend", "Completion", "Task", "TokenSink"]
