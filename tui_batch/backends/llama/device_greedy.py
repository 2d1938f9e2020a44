"""Greedy choice on the model's device: llama.cpp's backend sampling, an experiment.

On a GPU, a step's greedy choice here costs llama.cpp copying every output row of logits
back to the host (N x the vocabulary: 32 MB a step at 255 rows of 32,000) and one argmax
over them on the CPU (1.2 ms at 255 rows on the build machine). llama.cpp can instead
append the argmax to the step's own graph for the sequences given a greedy sampler
(`llama_set_sampler`); the rows of the others still come back whole (a schema's mask,
a thought's rules and a sampler chain need them), and when every row in a decode has one
none come back at all.

Used only where asked for (`TUI_BATCH_DEVICE_GREEDY=1`) with every layer on a GPU and
without `--batch-invariant`: on the CPU the graph's argmax made a step 3.5x slower, and a
decode whose rows are all chosen there computes its logits in another graph, whose
rounding may change an answer after some tokens (as another batch shape does). It waits
for a GPU measurement (`benchmarks/gpu/decode_limit.sh` runs tui-batch both ways).
"""

from __future__ import annotations

import os
from typing import Any

ENV = "TUI_BATCH_DEVICE_GREEDY"


def wanted(every_layer_on_gpu: bool, batch_invariant: bool) -> bool:
    """Whether a context for these settings chooses greedy tokens on its device (where
    a layer stays on the CPU, so may the output and its argmax)."""
    return every_layer_on_gpu and not batch_invariant and os.environ.get(ENV, "") == "1"


class DeviceGreedy:
    """Which sequences of one context have the device's greedy sampler, and their tokens."""

    def __init__(self, llama_cpp: Any, ctx: Any) -> None:
        self._lib, self._ctx = llama_cpp, ctx
        self._chains: dict[int, Any] = {}  # sequence id: its sampler chain, kept alive
        self._retired: list[Any] = []  # unset chains, freed once a decode has run without

    def has(self, seq_id: int) -> bool:
        return seq_id in self._chains

    def use(self, seq_id: int, greedy: bool) -> None:
        """Choose this sequence's next tokens on the device (`greedy`) or leave its rows of
        logits to the host. A change costs llama.cpp a new graph at the next decode, so a
        sequence keeps its choice until a prompt of another kind comes into it."""
        lib = self._lib
        if greedy == (seq_id in self._chains):
            return
        if not greedy:
            lib.llama_set_sampler(self._ctx, seq_id, None)
            self._retired.append(self._chains.pop(seq_id))
            return
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        if lib.llama_set_sampler(self._ctx, seq_id, chain):
            self._chains[seq_id] = chain
        else:  # this device cannot: the host chooses, as without
            lib.llama_sampler_free(chain)

    def tokens(self, batch_indices: list[int]) -> list[int]:
        """The tokens the device chose for these rows of the last decode's batch."""
        sampled = self._lib.llama_get_sampled_token_ith
        return [sampled(self._ctx, index) for index in batch_indices]

    def decoded(self) -> None:
        """After a decode: chains unset before it are no longer in llama.cpp's graph."""
        for chain in self._retired:
            self._lib.llama_sampler_free(chain)
        self._retired.clear()

    def close(self) -> None:
        for seq_id in list(self._chains):
            self.use(seq_id, False)
        self.decoded()
