"""What the parallel backend takes over from llama-cpp-python's chat completion, so that
a prompt is formatted, tokenized and sampled as `create_chat_completion` would: the
model's chat template, a chat's tokens, the prefix every prompt of a job shares, and the
sampler chain for a prompt's settings."""

from __future__ import annotations

from typing import Any

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
        self.formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def tokens(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        """The chat's tokens, and the stop strings its template adds."""
        formatted = self.formatter(messages=messages)
        tokens = self.model.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        return tokens, [s for s in stop if s]

    def shared_prefix(self, settings: GenerationSettings) -> list[int]:
        """The tokens every prompt of a job starts with: the chat template's opening and
        the job's system prompt. Found by formatting two different one-line chats."""
        first, _ = self.tokens(messages_for(Prompt("a"), settings))
        second, _ = self.tokens(messages_for(Prompt("b"), settings))
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
