"""A prompt's length as a run on a local model counts it: the model's chat template around
the prompt and its system prompt, tokenized with the model's vocabulary. "Does it fit
the context" is answered here by the rule the decode loop applies (`fits`), so what job
setup and `run` warn about is what will fail.

The vocabulary is loaded once per model file (vocabulary only: no weights), behind one
lock, through `quiet_model` (never llama-cpp-python's `suppress_stdout_stderr`, which
swaps the process's file descriptors 1 and 2: two loads at once from the dashboard's
workers left its terminal pointing at /dev/null).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_batch.backends.llama.chat import ChatFormat
from tui_batch.backends.llama.loading import import_llama_cpp, quiet_model
from tui_batch.backends.llama.thinking import template_kwargs
from tui_batch.core.backend import RequestForm
from tui_batch.core.errors import ModelError
from tui_batch.core.jobs import GenerationSettings, Prompt, build_messages, messages_for

_LOCK = threading.Lock()
# The vocabulary loaded last: (path, size, mtime) -> its model and chat format.
_loaded: tuple[tuple[str, int, int], Any, ChatFormat, int] | None = None


def fits(tokens: int, n_ctx: int) -> bool:
    """Whether a prompt of `tokens` (chat template included) can run in a context of
    `n_ctx`: at least one token must be left to generate (llama.cpp's rule too)."""
    return tokens < n_ctx


def _vocabulary(model_path: str | Path) -> tuple[ChatFormat, int]:
    """The chat format over the model's vocabulary, and how many bytes the template adds
    around a prompt at most (loaded once per file; call with `_LOCK` held)."""
    global _loaded
    path = Path(model_path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ModelError(f"Cannot read model {path}: {exc.strerror or exc}") from None
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    if _loaded is not None and _loaded[0] == key:
        return _loaded[2], _loaded[3]
    if _loaded is not None:
        _loaded[1].close()
        _loaded = None
    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = quiet_model(path, params)
    try:
        chat = ChatFormat(model, path.name)
        # A token is one byte or more, but for special tokens, which the template adds:
        # so a formatted prompt's tokens are at most its bytes plus the template's own.
        probe = chat.formatter(messages=build_messages(Prompt("x"), "y"))
        overhead = len(probe.prompt.encode("utf-8")) + 2
    except BaseException:
        model.close()
        raise
    _loaded = (key, model, chat, overhead)
    return chat, overhead


@dataclass(slots=True)
class LengthCheck:
    """Which prompts do not fit a local model's context of `n_ctx`, counted as the run
    counts them. `may_not_fit` is a cheap bound in bytes, so only prompts long enough to
    possibly not fit are tokenized (a big data file costs nothing extra)."""

    model_path: str | Path
    n_ctx: int
    system_prompt: str | None = None
    # What the system prompt says of the job's schema (`GenerationSettings.schema_note`).
    note: str | None = None
    _overhead: int | None = None

    def _size(self, prompt: Prompt) -> int:
        system = prompt.system if prompt.system is not None else self.system_prompt
        texts = [prompt.text, system or "", self.note or ""]
        texts += [str(m.get("content", "")) for m in prompt.messages or []]
        return sum(len(text.encode("utf-8", "replace")) for text in texts)

    def may_not_fit(self, prompt: Prompt) -> bool:
        if self._overhead is None:
            with _LOCK:
                _, self._overhead = _vocabulary(self.model_path)
        return self._size(prompt) + self._overhead >= self.n_ctx

    def tokens(self, prompts: Iterable[Prompt]) -> list[int]:
        """Each prompt's tokens with the chat template, as the decode loop makes them."""
        with _LOCK:
            chat, _ = _vocabulary(self.model_path)
            return [
                len(chat.tokens(build_messages(p, self.system_prompt, self.note))[0])
                for p in prompts
            ]

    def too_long(self, prompts: Iterable[Prompt]) -> list[tuple[Prompt, int]]:
        """The prompts that will fail for their length, each with its tokens."""
        candidates = [p for p in prompts if self.may_not_fit(p)]
        if not candidates:
            return []
        counts = self.tokens(candidates)
        return [(p, n) for p, n in zip(candidates, counts, strict=True) if not fits(n, self.n_ctx)]


def local_request_form(model_path: str | Path, settings: GenerationSettings) -> RequestForm:
    """How a local model reads a job's prompts, for the answer cache: the text its chat
    template makes of each (with the vocabulary only: no weights are loaded), keyed by
    the file's content and llama-cpp-python's version (a new engine may answer
    differently)."""
    llama_cpp = import_llama_cpp()
    path = Path(model_path)
    with _LOCK:
        # The formatter is the template alone: it outlives the vocabulary it came with.
        chat = _vocabulary(path)[0]
        formatter = chat.formatter
        # Rendered with the job's reasoning switch, as the decode loops render it.
        kwargs = template_kwargs(settings) if chat.thinking is not None else {}

    def render(prompt: Prompt) -> str:
        return formatter(messages=messages_for(prompt, settings), **kwargs).prompt

    return RequestForm(
        model=f"llama-cpp-python {llama_cpp.__version__}",
        label=path.name,
        render=render,
        model_file=path,
    )
