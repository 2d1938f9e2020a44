"""The answer cache's key: a SHA-256 over everything that decides an answer.

What goes in: the cache format, the model's identity (a local model's content hash and
the engine's version; a server's model id and base URLs), the text the model reads (the
chat template's output for a local model, the messages for a server), every sampling
setting as the prompt runs with it (temperature, top-p, seed, max tokens, stop strings),
the schema, the batch-invariant mode, the reasoning settings and, in a job of repeats,
the run's number. Each
part is written as canonical JSON (keys sorted, no spaces), so the order settings are
given in never matters; a schema keeps its own order, which decides its grammar.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tui_batch.core.jobs import GenerationSettings, Prompt

# Changed whenever what an entry holds or how a key is made changes: old entries are
# then never served (they age out with `tui-batch cache prune`). 2: the reasoning
# settings are in the key, and the thought is kept apart from the answer.
CACHE_FORMAT = 2


def _canonical(value: Any, sort: bool = True) -> bytes:
    return json.dumps(
        value, sort_keys=sort, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8", "surrogatepass")


def sampling_of(prompt: Prompt, settings: GenerationSettings) -> dict[str, Any]:
    """The sampling settings `prompt` runs with: the job's, with its own overrides."""
    options = prompt.options
    return {
        "max_tokens": int(options.get("max_tokens", settings.max_tokens)),
        "temperature": float(options.get("temperature", settings.temperature)),
        "top_p": float(options.get("top_p", settings.top_p)),
        "seed": options.get("seed", settings.seed),
        "stop": list(options.get("stop", settings.stop)),
    }


def reproducible(sampling: Mapping[str, Any]) -> bool:
    """Whether running again gives the same answer: greedy, or sampled with a fixed seed."""
    return sampling["temperature"] == 0 or sampling["seed"] is not None


class KeyMaker:
    """Keys for the prompts of one job on one model: `model` is the model's identity,
    the rest of the job's settings are read once here."""

    def __init__(self, model: str, settings: GenerationSettings) -> None:
        self.model = model
        self.settings = settings
        schema = settings.schema
        # What the answer must be, not where the schema was written down.
        self._schema = _part(
            _canonical(None if schema is None else [schema.schema, list(schema.choices)], False)
        )
        # The head of a key (format, model, sampling, mode, repeat) by the prompt's own
        # options and repeat: most prompts of a job share one.
        self._heads: dict[tuple[Any, ...], bytes | None] = {}

    def key(self, rendered: str, prompt: Prompt) -> bytes | None:
        """The key of `prompt`, which the model reads as `rendered`; None when its
        answer cannot be reproduced (sampled without a seed) and so is never cached."""
        options = prompt.options
        memo = (
            tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()),
            prompt.repeat,
        )
        if memo not in self._heads:
            self._heads[memo] = self._head(prompt)
        head = self._heads[memo]
        if head is None:
            return None
        digest = hashlib.sha256(head)
        digest.update(self._schema)
        digest.update(_part(rendered.encode("utf-8", "surrogatepass")))
        return digest.digest()

    def _head(self, prompt: Prompt) -> bytes | None:
        sampling = sampling_of(prompt, self.settings)
        if not reproducible(sampling):
            return None
        return _part(
            _canonical(
                {
                    "format": CACHE_FORMAT,
                    "model": self.model,
                    "sampling": sampling,
                    "batch_invariant": self.settings.batch_invariant,
                    "repeat": prompt.repeat,
                    "reasoning": [
                        self.settings.reasoning,
                        self.settings.reasoning_budget,
                        self.settings.reasoning_effort,
                    ],
                }
            )
        )


def _part(data: bytes) -> bytes:
    """A part of a key, its length first: no two different splits give the same bytes."""
    return len(data).to_bytes(8, "big") + data
