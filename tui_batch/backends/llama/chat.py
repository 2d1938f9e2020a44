"""What the parallel backend takes over from llama-cpp-python's chat completion, so that
a prompt is formatted, tokenized and sampled as `create_chat_completion` would: the
model's chat template, a chat's tokens, the prefix every prompt of a job shares, and the
sampler chain for a prompt's settings."""

from __future__ import annotations

from typing import Any

from tui_batch.backends.llama.thinking import (
    ThinkingFormat,
    ThoughtTracker,
    find_thinking,
    template_kwargs,
)
from tui_batch.core.errors import ModelError
from tui_batch.core.jobs import GenerationSettings, Prompt, messages_for

# What create_chat_completion uses unless told otherwise.
TOP_K, MIN_P, TYPICAL_P, PENALTY_LAST_N = 40, 0.05, 1.0, 64
LLAMA_DEFAULT_SEED = 0xFFFFFFFF


class ChatFormat:
    """A model's own chat template, set up as `Llama` sets it up."""

    def __init__(self, model: Any, name: str) -> None:
        from llama_cpp import llama_chat_format

        template = model.metadata().get("tokenizer.chat_template")
        if template is None:
            raise ModelError(f"{name} has no chat template")
        self.model = model
        eos, bos = model.token_eos(), model.token_bos()
        eos_text = model.token_get_text(eos) if eos != -1 else ""
        bos_text = model.token_get_text(bos) if bos != -1 else ""
        self.formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=eos_text, bos_token=bos_text, stop_token_ids=[eos]
        )
        # How the model thinks, if it does (found from its template once, when asked).
        self._thinking: tuple[ThinkingFormat | None] | None = None
        self._template = (template, eos_text, bos_text)

    @property
    def thinking(self) -> ThinkingFormat | None:
        """How the model's template writes a thought (None: it writes none)."""
        if self._thinking is None:
            self._thinking = (find_thinking(*self._template),)
        return self._thinking[0]

    def tokens(
        self, messages: list[dict[str, Any]], settings: GenerationSettings | None = None
    ) -> tuple[list[int], list[str]]:
        """The chat's tokens, and the stop strings its template adds; rendered with the
        job's reasoning switch where the model thinks."""
        kwargs = template_kwargs(settings) if settings and self.thinking else {}
        formatted = self.formatter(messages=messages, **kwargs)
        tokens = self.model.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        return tokens, [s for s in stop if s]

    def markers(self) -> tuple[list[int], list[int]]:
        """The thought's opening and closing markers as token ids (the closing one as
        the template writes it, with the white space after it)."""
        thinking = self.thinking
        assert thinking is not None
        return self._ids(thinking.start), self._ids(thinking.end.lstrip())

    def _ids(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def tracker(self, settings: GenerationSettings, budget: int | None) -> ThoughtTracker | None:
        """A follower of one prompt's thought, for a job on this model (None: its prompts
        do not think)."""
        thinking = self.thinking
        if thinking is None or not thinking.thinks(settings):
            return None
        start, close = self.markers()
        end = self._ids(thinking.end.strip())
        # With a schema the answer starts right after the marker, as its grammar allows.
        close = end if settings.schema is not None else close
        return ThoughtTracker(start, end, thinking.opened(settings), budget, close=close)

    def shared_prefix(self, settings: GenerationSettings) -> list[int]:
        """The tokens every prompt of a job starts with: the chat template's opening and
        the job's system prompt. Found by formatting two different one-line chats."""
        first, _ = self.tokens(messages_for(Prompt("a"), settings), settings)
        second, _ = self.tokens(messages_for(Prompt("b"), settings), settings)
        length = 0
        while length < min(len(first), len(second)) and first[length] == second[length]:
            length += 1
        # The last shared token may merge with the text after it in a real prompt.
        return first[: max(0, length - 1)]


def sampler_chain(model: Any, temperature: float, top_p: float, seed: int | None) -> Any:
    """The chain `Llama._init_sampler` builds for these settings."""
    from llama_cpp import _internals

    sampler = _internals.LlamaSampler()
    sampler.add_penalties(
        n_vocab=model.n_vocab(),
        penalty_last_n=PENALTY_LAST_N,
        penalty_repeat=1.0,
        penalty_freq=0.0,
        penalty_present=0.0,
    )
    seed = LLAMA_DEFAULT_SEED if seed is None else seed
    if temperature < 0:
        sampler.add_dist(seed)
    elif temperature == 0:
        sampler.add_greedy()
    else:
        sampler.add_top_k(TOP_K)
        sampler.add_typical(TYPICAL_P, 1)
        sampler.add_top_p(top_p, 1)
        sampler.add_min_p(MIN_P, 1)
        sampler.add_temp(temperature)
        sampler.add_dist(seed)
    return sampler
