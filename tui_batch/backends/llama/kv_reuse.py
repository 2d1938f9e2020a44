"""Where a new prompt's KV cells come from in the parallel loop, so that no token is
prefilled twice: the job's shared prompt start, decoded once into a sequence of its own
and copied; a free slot whose cells still hold the prompt it ran last; a running prompt's
cells, copied; or a repeat's twin admitted with it, waited for one step and copied. On a
CPU prefill gains nothing from batching, so a token not prefilled is time saved.

`KVReuse` is a part of `ParallelLlamaBackend`: its state (`_slots`, `_free`, `_kept`,
`_prefix`) is the backend's.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from tui_batch.backends.llama.slot import Slot
from tui_batch.core.jobs import GenerationSettings

if TYPE_CHECKING:
    from tui_batch.backends.llama.context import LoadedModel

# A shared prompt prefix shorter than this is decoded with each prompt: copying a
# sequence's KV cells costs more than decoding a few tokens.
MIN_SHARED_PREFIX = 8
# A finished prompt's KV cells stay in its slot; a new prompt given that slot starts after
# the tokens it shares with the old one, when they are at least this many (prompts of a
# template share its text up to the first field that differs).
MIN_REUSED = 8


class KVReuse:
    """The parallel backend's slots and what their KV cells hold."""

    capacity: int
    batch_invariant: bool
    _slots: dict[int, Slot]
    _free: deque[int]
    _kept: dict[int, list[int]]  # what each free slot's KV cells still hold
    _prefix: list[int]  # the job's shared prompt start, decoded into sequence `capacity`
    _prefix_ready: bool

    if TYPE_CHECKING:  # the backend's own

        @property
        def _m(self) -> LoadedModel: ...

        def _run_decode(self) -> int: ...

    def use_prefix(self, settings: GenerationSettings) -> None:
        """Decode these settings' shared prompt start (chat template, system prompt) once,
        at the next step, for the prompts that begin with it to copy."""
        self._prefix = self._m.chat.shared_prefix(settings)
        self._prefix_ready = False

    def _decode_prefix(self) -> None:
        """Decode the shared prefix once, into its own sequence, for slots to copy."""
        self._prefix_ready = True
        # Batch-invariant on a GPU: each prompt prefilled whole, as one at a time does,
        # since a GPU may round a prefix decoded apart differently (not measured).
        if len(self._prefix) < MIN_SHARED_PREFIX or (self.batch_invariant and self._m.on_gpu):
            self._prefix = []
            return
        memory = self._m.lib.llama_get_memory(self._m.ctx.ctx)
        self._m.lib.llama_memory_seq_rm(memory, self.capacity, -1, -1)
        batch = self._m.batch
        for start in range(0, len(self._prefix), batch.size):
            batch.clear()
            batch.add_prompt(self.capacity, self._prefix[start : start + batch.size], start, False)
            if self._run_decode() != 0:
                self._m.lib.llama_memory_seq_rm(memory, self.capacity, -1, -1)
                self._prefix = []
                return

    def _start_from_prefix(self, slot: Slot) -> None:
        """Copy the shared prefix's KV into the slot, so its prefill starts after it."""
        prefix = self._prefix
        if prefix and slot.tokens[: len(prefix)] == prefix and len(slot.tokens) > len(prefix):
            memory = self._m.lib.llama_get_memory(self._m.ctx.ctx)
            self._m.lib.llama_memory_seq_cp(memory, self.capacity, slot.seq_id, -1, -1)
            slot.n_past = len(prefix)

    def _prefilling(self, tokens: list[int]) -> int | None:
        """A slot whose prompt is `tokens` too and whose prefill is still to come (the
        repeats of a prompt are admitted together): the one to wait for."""
        for slot in self._slots.values():
            if slot.twin is None and slot.n_past < len(tokens) - 1 and slot.tokens == tokens:
                return slot.seq_id
        return None

    def _take_twins(self, slots: list[Slot]) -> list[Slot]:
        """The slots to decode this step: a slot waiting for its twin's prefill copies
        the twin's cells once they are there (all but the last prompt token, decoded
        for its own logits) and joins; until then it sits the step out. A twin gone
        (finished, failed) leaves it to prefill alone."""
        ready = []
        memory = None
        for slot in slots:
            if slot.twin is not None:
                source = self._slots.get(slot.twin)
                shared = len(slot.tokens) - 1
                if source is not None and source.tokens == slot.tokens:
                    if source.n_past < shared:
                        continue
                    if memory is None:
                        memory = self._m.lib.llama_get_memory(self._m.ctx.ctx)
                    self._m.lib.llama_memory_seq_cp(memory, source.seq_id, slot.seq_id, -1, -1)
                    self._m.lib.llama_memory_seq_rm(memory, slot.seq_id, shared, -1)
                    slot.n_past = shared
                slot.twin = None
            ready.append(slot)
        return ready

    def _free_slot(self, tokens: list[int]) -> tuple[int, int]:
        """A free slot for a prompt of `tokens`, and how many of them its KV cells hold
        already. Prefill is most of a short answer's cost (and a CPU prefills no faster
        in batches), so a prompt starts after the longest start it shares with a prompt
        whose cells are there: one that ran in a free slot (kept there), or one running
        (its slot's cells copied over). At least MIN_REUSED tokens and more than the
        shared prefix, else it starts from the shared prefix (`_start_from_prefix`).
        Batch-invariant decoding prefills every prompt whole, as alone."""
        target, source, shared = self._free[0], None, 0
        if not self.batch_invariant:
            for seq_id in self._free:
                kept = self._kept.get(seq_id)
                if kept is not None and (common := _common_prefix(kept, tokens)) > shared:
                    target, source, shared = seq_id, seq_id, common
            for slot in self._slots.values():
                done = slot.tokens[: min(slot.n_past, len(slot.tokens))]
                if (common := _common_prefix(done, tokens)) > shared + MIN_REUSED:
                    source, shared = slot.seq_id, common
        shared = min(shared, len(tokens) - 1)  # the last token is decoded for its logits
        if shared < max(MIN_REUSED, len(self._prefix) + 1 if self._prefix_ready else 0):
            source, shared = None, 0
        if source is not None and source != target:  # a running slot's: its cells copied
            target = next((seq for seq in self._free if seq not in self._kept), target)
        self._free.remove(target)
        kept = self._kept.pop(target, None)
        lib, memory = self._m.lib, self._m.lib.llama_get_memory(self._m.ctx.ctx)
        if source is not None and source != target:
            lib.llama_memory_seq_cp(memory, source, target, -1, -1)  # a stream copies whole
        if source is not None:
            lib.llama_memory_seq_rm(memory, target, shared, -1)
        elif kept is not None:
            lib.llama_memory_seq_rm(memory, target, -1, -1)
        return target, shared


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` start with in common."""
    count = min(len(a), len(b))
    for i in range(count):
        if a[i] != b[i]:
            return i
    return count
