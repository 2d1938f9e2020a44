"""One decode step's input and output on llama.cpp, written and read through numpy.

`StepBatch` is a `llama_batch` whose arrays are numpy buffers we own, so a step writes its
rows with a few slice assignments instead of one ctypes field at a time. `greedy_tokens`
picks the next token of many rows of logits with one argmax over llama.cpp's own output
buffer (a view, not a copy). `StepTiming` splits a backend's time into decoding and the
rest, for benchmarks and profiling.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_INT32_P = ctypes.POINTER(ctypes.c_int32)


class StepBatch:
    """Up to `size` tokens for one `llama_decode`, each of one sequence.

    Rows are added in order; a row asked for logits gets the next output row, which is
    where llama.cpp puts its logits (outputs are stored in the order they appear).
    """

    def __init__(self, llama_cpp: Any, size: int) -> None:
        self.size = size
        self.token = np.zeros(size, np.int32)
        self.pos = np.zeros(size, np.int32)
        self.n_seq_id = np.ones(size, np.int32)
        self.seq_id = np.zeros(size, np.int32)
        self.logits = np.zeros(size, np.int8)
        # llama_batch wants one pointer per row to that row's sequence ids: point each
        # at its own element of `seq_id`, once, so a step writes sequence ids as a slice.
        base, step = self.seq_id.ctypes.data, self.seq_id.itemsize
        self._seq_ptrs = (_INT32_P * size)(
            *(ctypes.cast(base + i * step, _INT32_P) for i in range(size))
        )
        self.struct = llama_cpp.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(_INT32_P),
            embd=None,
            pos=self.pos.ctypes.data_as(_INT32_P),
            n_seq_id=self.n_seq_id.ctypes.data_as(_INT32_P),
            seq_id=self._seq_ptrs,
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        self.n_tokens = 0
        self.n_outputs = 0

    @property
    def room(self) -> int:
        return self.size - self.n_tokens

    def clear(self) -> None:
        self.n_tokens = self.n_outputs = 0

    def add_prompt(self, seq_id: int, tokens: Sequence[int], start: int, output: bool) -> int:
        """Prompt tokens of one sequence from position `start`; with `output`, the last
        one's logits are kept. Returns the output row, or -1 without `output`."""
        first, count = self.n_tokens, len(tokens)
        end = first + count
        self.token[first:end] = tokens
        self.pos[first:end] = np.arange(start, start + count, dtype=np.int32)
        self.seq_id[first:end] = seq_id
        self.logits[first:end] = 0
        self.n_tokens = end
        if not output:
            return -1
        self.logits[end - 1] = 1
        self.n_outputs += 1
        return self.n_outputs - 1

    def add_next(self, seq_ids: Sequence[int], tokens: Sequence[int], positions: Sequence[int]):
        """One token for each of several sequences, each with logits kept. Returns the
        first one's batch index and output row; the others follow in order."""
        first, count = self.n_tokens, len(tokens)
        end = first + count
        self.token[first:end] = tokens
        self.pos[first:end] = positions
        self.seq_id[first:end] = seq_ids
        self.logits[first:end] = 1
        self.n_tokens = end
        row = self.n_outputs
        self.n_outputs += count
        return first, row

    def launch(self, llama_cpp: Any, ctx: Any) -> int:
        """`llama_decode` of the rows added. On a GPU it returns once the work is queued
        (`llama_synchronize` waits for it); on the CPU, once it is done."""
        self.struct.n_tokens = self.n_tokens
        return llama_cpp.llama_decode(ctx, self.struct)


def greedy_tokens(
    llama_cpp: Any, ctx: Any, n_outputs: int, n_vocab: int, rows: Sequence[int]
) -> list[int]:
    """llama.cpp's greedy choice for each of the output `rows` of the last decode: the
    token with the highest logit, the first such on a tie (as its greedy sampler)."""
    pointer = llama_cpp.llama_get_logits(ctx)
    logits = np.ctypeslib.as_array(pointer, shape=(n_outputs, n_vocab))
    # Every row at once (rows of sampled slots are few), then each asked-for row's.
    return logits.argmax(axis=1)[np.asarray(rows, dtype=np.intp)].tolist()


@dataclass(slots=True)
class StepTiming:
    """Where a backend's steps spent their time: in `llama_decode` (the model, on the
    CPU or GPU) and everything else (filling batches, sampling, text, stop strings).

    The clock times (`time.perf_counter`) bound the generation phase the way
    `llama-batched-bench` times it: from the end of the last step that decoded prompt
    tokens to the end of the last step, with what was generated in between, so a
    benchmark can set tokens/s against llama.cpp's own (the engine's time between steps
    included)."""

    steps: int = 0
    decodes: int = 0
    tokens: int = 0  # tokens decoded: prompts and generated
    prompt_tokens: int = 0  # of which prompt tokens
    generated: int = 0  # tokens chosen (the next token of a prompt)
    decode_seconds: float = 0.0
    step_seconds: float = 0.0
    first_step_at: float = 0.0  # when the first step began
    prefill_ended_at: float = 0.0  # when the last step with prompt tokens ended
    last_step_at: float = 0.0  # when the last step ended
    generated_since_prefill: int = 0  # tokens chosen in the steps after that one

    @property
    def other_seconds(self) -> float:
        return self.step_seconds - self.decode_seconds

    def step_done(self, started: float, prompt_tokens: int, generated: int) -> None:
        """Count a step that began at `started` and decoded this many prompt tokens
        and chose this many next tokens."""
        now = time.perf_counter()
        if not self.steps:
            self.first_step_at = started
        self.steps += 1
        self.step_seconds += now - started
        self.prompt_tokens += prompt_tokens
        self.generated += generated
        self.last_step_at = now
        if prompt_tokens:
            self.prefill_ended_at, self.generated_since_prefill = now, 0
        else:
            self.generated_since_prefill += generated

    def to_dict(self) -> dict[str, float]:
        return asdict(self) | {"other_seconds": self.other_seconds}
