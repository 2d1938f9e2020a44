"""A job's schema enforced while a local model decodes, with llguidance.

The tokenizer is built once per loaded model from its vocabulary (a quarter of a second
on the demo model). Each running prompt has its own matcher, a copy of one made per
schema. Before a token is chosen, every constrained row's allowed tokens are computed in
one call (llguidance fills the rows' bitmasks in parallel) and the others' logits pushed
far down (BLOCKED), in llama.cpp's own logits buffer: so the greedy argmax and llama.cpp's
sampler chain both choose among allowed tokens only, and end of generation is allowed
only where the matcher accepts. After a token is chosen its matcher takes it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from tui_batch.core.structured.schema import AnswerSchema, json_grammar

ENFORCED = "enforced while decoding (llguidance)"
# What a token the schema does not allow has added to its logit: far below any real one,
# and finite, so the sampler's arithmetic stays finite too.
BLOCKED = -1e30


def schema_grammar(schema: AnswerSchema) -> str:
    """The schema in the form this backend enforces it: llguidance's grammar of the JSON
    Schema (written as `JSON_OPTIONS` says), or for choices a Lark rule of the labels;
    made once per schema."""
    return _grammar(json.dumps(schema.schema, sort_keys=True), schema.choices)


@lru_cache(maxsize=64)
def _grammar(schema_text: str, choices: tuple[str, ...]) -> str:
    import llguidance

    if choices:
        lark = "start: " + " | ".join(json.dumps(c) for c in choices)
        return llguidance.LLMatcher.grammar_from_lark(lark)
    return json_grammar(json.loads(schema_text))


class SchemaConstraint:
    """llguidance over one model's vocabulary: matchers for schemas, masks for rows."""

    def __init__(self, llama_cpp: Any, vocab: Any, n_vocab: int) -> None:
        import llguidance
        import llguidance.llamacpp

        self._llguidance = llguidance
        eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        # llguidance calls a llama.cpp function that warns it is deprecated, once a token.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(
                vocab, n_vocab=n_vocab, eos_token=eog or None
            )
        self.executor = llguidance.LLExecutor()
        self.n_vocab = n_vocab
        self.words = (n_vocab + 31) // 32
        self._pristine: dict[str, Any] = {}
        self._bitmask = np.zeros((0, self.words), np.int32)

    def matcher(self, schema: AnswerSchema) -> Any:
        """A new matcher for one answer of this schema (a copy of one made per grammar)."""
        grammar = schema_grammar(schema)
        pristine = self._pristine.get(grammar)
        if pristine is None:
            pristine = self._llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
            if pristine.is_error():
                raise ValueError(pristine.get_error())
            self._pristine[grammar] = pristine
        return pristine.deep_copy()

    def mask(self, logits: np.ndarray, rows: Sequence[int], matchers: Sequence[Any]) -> None:
        """Push down, in place, each row's logits of the tokens its matcher does not
        allow next (`logits` is llama.cpp's buffer, `rows` its rows) by BLOCKED: no such
        token can win an argmax or be sampled, and the allowed keep their values exactly."""
        self.apply(logits, rows, self.penalty(matchers))

    def penalty(self, matchers: Sequence[Any]) -> np.ndarray:
        """A row for each matcher, to add to its row of logits: 0 where it allows the
        token next, BLOCKED where not. It needs no logits, so the parallel loop makes it
        while a GPU decodes them. (An add of a penalty row is a tenth of the time of a
        masked assignment.)"""
        count = len(matchers)
        if self._bitmask.shape[0] < count:
            self._bitmask = np.zeros((count, self.words), np.int32)
        bitmask = self._bitmask[:count]
        self.executor.unsafe_compute_mask_ptr(
            [(matcher, i) for i, matcher in enumerate(matchers)],
            bitmask.ctypes.data,
            self.words * 4,
            count,
        )
        allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")
        return (allowed[:, : self.n_vocab].astype(np.float32) - 1.0) * -BLOCKED

    @staticmethod
    def apply(logits: np.ndarray, rows: Sequence[int], penalty: np.ndarray) -> None:
        """Add each row of a `penalty` to its row of logits, in place."""
        first, count = rows[0], len(rows)
        if list(rows) == list(range(first, first + count)):  # the usual: one block of rows
            logits[first : first + count] += penalty
        else:
            for i, row in enumerate(rows):
                logits[row] += penalty[i]

    def mask_one(self, logits: np.ndarray, matcher: Any) -> np.ndarray:
        """One row of logits (a copy) with the tokens `matcher` does not allow pushed
        down (see `mask`)."""
        rows = logits.reshape(1, -1).copy()
        self.mask(rows, [0], [matcher])
        return rows[0]


# A model's constraint, or None and why there is none.
Made = tuple[SchemaConstraint | None, str | None]


def make_constraint(llama_cpp: Any, vocab: Any, n_vocab: int) -> Made:
    """The constraint for a model, or None and why llguidance cannot read its vocabulary
    (then answers are checked and run again only)."""
    try:
        return SchemaConstraint(llama_cpp, vocab, n_vocab), None
    except Exception as exc:  # noqa: BLE001 - any failure means: not enforced, and say so
        return None, f"not enforced on this model ({_said(exc)}): answers are checked only"


def enforcement(made: Made, schema: AnswerSchema | None) -> Made:
    """What enforces `schema` with a model's constraint (`made`), and how the job's
    answers are kept to it, in words; (None, None) without a schema."""
    constraint, problem = made
    if schema is None:
        return None, None
    if constraint is None:
        return None, problem
    try:
        constraint.matcher(schema)
    except ValueError as exc:
        return None, f"not enforced ({_said(exc)}): answers are checked only"
    return constraint, ENFORCED


def _said(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
