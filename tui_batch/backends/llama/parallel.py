"""Continuous batching on llama.cpp: up to N prompts decoded together in one context.

Each slot owns a sequence id. A step decodes, in one `llama_decode`, the next token of
every running slot and as much of newly admitted prompts as fits in `N_BATCH` tokens;
then each slot gets its next token from its own row of logits before the next decode
overwrites them (greedy slots all at once, with one argmax). A finished slot is refilled
at once; its KV cells stay, and a new prompt starts after the tokens it shares with the
prompt whose cells hold the most of it (`kv_reuse`). Prompts are formatted with the
model's chat template and sampled with the same chain as `create_chat_completion`.

Full batches round differently from one row at a time, so greedy answers may differ from
the sequential backend's after some tokens (as with vLLM or llama-server); they are the
same for the same batch shape. `batch_invariant` trades speed for answers identical,
token for token, to one prompt at a time: see `_invariant_groups`.

One thread at a time uses the context: the engine's, which calls `step()` (or, for
jobs sharing the model, `shared.SharedModel`'s decode thread). Each prompt is decoded
with its own job's settings (`JobRun`), so prompts of several jobs share the steps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tui_batch.backends.llama.answer import GeneratedText
from tui_batch.backends.llama.chat import sampler_chain
from tui_batch.backends.llama.constraint import BLOCKED, enforcement
from tui_batch.backends.llama.context import LoadedModel, load_context
from tui_batch.backends.llama.device_greedy import DeviceGreedy, wanted
from tui_batch.backends.llama.kv_reuse import KVReuse
from tui_batch.backends.llama.loading import load_key
from tui_batch.backends.llama.slot import JobRun, Slot
from tui_batch.backends.llama.step import StepTiming, greedy_tokens
from tui_batch.backends.llama.tokens import local_request_form
from tui_batch.core.backend import Backend, Completion, RequestForm, Task, TokenSink
from tui_batch.core.errors import ModelError
from tui_batch.core.jobs import BatchJob, GenerationSettings, Prompt, messages_for
from tui_batch.core.setting_table import MAX_PARALLEL


class ParallelLlamaBackend(KVReuse, Backend):
    """Holds up to `parallel` prompts in flight in one llama.cpp context."""

    def __init__(self, model_path: str | Path, parallel: int, greedy_argmax: bool = True) -> None:
        """`greedy_argmax=False` samples greedy slots with llama.cpp's chain, one by one,
        as the fast path's reference."""
        if not 1 <= parallel <= MAX_PARALLEL:
            raise ModelError(f"Parallel: must be 1 to {MAX_PARALLEL} here, got {parallel}")
        self.model_path = Path(model_path)
        self.capacity = parallel
        self.loaded: LoadedModel | None = None
        self._slots: dict[int, Slot] = {}
        self._free = deque(range(parallel))
        # What each free slot's KV cells still hold: the prompt it ran last.
        self._kept: dict[int, list[int]] = {}
        self._failed: list[Completion] = []
        # The job `begin` was given: what `submit` decodes a task with unless told.
        self.run = JobRun(GenerationSettings())
        self.greedy_argmax = greedy_argmax
        self.batch_invariant = False
        self.timing = StepTiming()
        # The schema's penalty rows for the decode running, and the slots they are for.
        self._masks: tuple[list[Slot], np.ndarray] | None = None
        # Greedy tokens chosen on the GPU (an experiment: see `device_greedy`), else None.
        self.device_greedy: DeviceGreedy | None = None
        # The job's shared prompt prefix (its chat template's start and system prompt),
        # decoded once into a sequence of its own when the first step comes.
        self._prefix: list[int] = []
        self._prefix_ready = False

    # Loading ------------------------------------------------------------------------

    def begin(self, job: BatchJob, on_token: TokenSink | None = None) -> None:
        super().begin(job, on_token)
        self.run = self.job_run(job.settings, on_token)
        self.schema_mode = self.run.schema_mode
        self.use_prefix(job.settings)

    def job_run(self, settings: GenerationSettings, on_token: TokenSink | None) -> JobRun:
        """How a job with these settings is decoded here (the model open for them)."""
        schema = settings.schema
        made = self._m.schema_constraint() if schema is not None else (None, None)
        constraint, mode = enforcement(made, schema)
        return JobRun(settings, constraint, mode, on_token)

    @property
    def _m(self) -> LoadedModel:
        """The loaded model (`loaded`), which every step uses; a ModelError before `open`."""
        if self.loaded is None:
            raise ModelError(f"{self.model_path.name} is not loaded: open() it first")
        return self.loaded

    def open(self, settings: GenerationSettings) -> None:
        threads, key = settings.effective_threads, model_key(settings)
        self.batch_invariant = settings.batch_invariant
        if self.loaded is not None and key == self.loaded.key:
            return
        self.close()
        self.loaded, fit = load_context(
            self.model_path, settings, threads, key, self.capacity, not self.greedy_argmax
        )
        if fit != self.capacity:  # the automatic number's KV cache would not fit
            self.capacity = fit
            self._free = deque(range(fit))
        lib, layers = self.loaded.lib, settings.n_gpu_layers
        every_layer = layers == -1 or layers >= lib.llama_model_n_layer(self.loaded.model.model)
        if self.greedy_argmax and wanted(every_layer, self.batch_invariant):
            self.device_greedy = DeviceGreedy(lib, self.loaded.ctx.ctx)
        self._prefix, self._prefix_ready = [], False
        self._kept.clear()

    # Tasks --------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._slots) + len(self._failed)

    def submit(self, task: Task, run: JobRun | None = None) -> None:
        """Admit `task` into a free slot, decoded as `run` says (else as the job
        `begin` was given); only called while a slot is free."""
        run = run or self.run
        settings, options = run.settings, task.prompt.options
        tokens, template_stop = self._m.chat.tokens(messages_for(task.prompt, settings), settings)
        if len(tokens) >= self._m.n_ctx:
            self._failed.append(
                Completion(
                    task.index,
                    error=f"Prompt is {len(tokens)} tokens but the context holds "
                    f"{self._m.n_ctx}: shorten it or give a bigger context size",
                    tokens_input=len(tokens),
                    finish_reason=None,
                    retryable=False,
                )
            )
            return
        stop = options.get("stop", settings.stop)
        stop = [stop] if isinstance(stop, str) else list(stop or [])
        stop += template_stop
        max_tokens = options.get("max_tokens", settings.max_tokens) or self._m.n_ctx
        max_tokens = min(max_tokens, self._m.n_ctx - len(tokens))
        temperature = options.get("temperature", settings.temperature)
        sampler = None  # greedy: see `_greedy`
        if temperature != 0:
            top_p, seed = options.get("top_p", settings.top_p), options.get("seed", settings.seed)
            sampler = sampler_chain(self._m.model, temperature, top_p, seed)
        seq_id, reused = self._free_slot(tokens)
        twin = None if reused or self.batch_invariant else self._prefilling(tokens)
        self._slots[seq_id] = Slot(
            seq_id=seq_id,
            task=task,
            tokens=tokens,
            max_tokens=max_tokens,
            answer=GeneratedText([s.encode("utf-8") for s in stop]),
            sampler=sampler,
            run=run,
            matcher=run.constraint.matcher(settings.schema) if run.constraint else None,
            n_past=reused,
            twin=twin,
            tracker=self._m.chat.tracker(settings, settings.reasoning_budget),
        )
        if self.device_greedy is not None:  # only a plain greedy answer needs no logits
            slot = self._slots[seq_id]
            plain = slot.sampler is None and slot.matcher is None and slot.tracker is None
            self.device_greedy.use(seq_id, plain)

    # Decoding -----------------------------------------------------------------------

    def request_form(self, job: BatchJob) -> RequestForm:
        return local_request_form(self.model_path, job.settings)

    def input_tokens(self, prompt: Prompt) -> int | None:
        return self.count_tokens(prompt, self.run.settings)

    def count_tokens(self, prompt: Prompt, settings: GenerationSettings) -> int:
        """The tokens `prompt` is with these settings' chat template and system prompt."""
        return len(self._m.chat.tokens(messages_for(prompt, settings), settings)[0])

    def step(self) -> list[Completion]:
        """Decode once or a few times for every slot: its prompt or its next token."""
        started = time.perf_counter()
        done, self._failed = self._failed, []
        if not self._slots:
            return done
        if not self._prefix_ready:
            self._decode_prefix()
        slots = self._take_twins(list(self._slots.values()))
        for slot in slots:
            if slot.n_past == 0:
                self._start_from_prefix(slot)
        groups = self._invariant_groups(slots) if self.batch_invariant else [slots]
        prompt_tokens = chosen = 0
        for group in groups:
            prompt_tokens += self._decode(group)
            chosen += sum(slot.batch_index >= 0 for slot in group)
            done += self._advance(group)
        self.timing.step_done(started, prompt_tokens, chosen)
        return done

    def _invariant_groups(self, slots: list[Slot]) -> list[list[Slot]]:
        """The decodes that keep greedy answers identical to one prompt at a time: each
        new prompt prefilled alone (as it is then), next tokens in groups of at most
        `_exact_group` rows (the kernels one row at a time use), as evenly as that allows."""
        prefilling = [slot for slot in slots if slot.n_past < len(slot.tokens)]
        if prefilling:
            return [[slot] for slot in prefilling]
        count = -(-len(slots) // self._m.exact_group)
        return [slots[i::count] for i in range(count)]

    def _decode(self, group: list[Slot]) -> int:
        """One `llama_decode`: the next token of each running slot in the group, then the
        prompts of new ones, as much as fits (a prompt left over goes on next step).
        Returns how many prompt tokens it decoded."""
        batch = self._m.batch
        batch.clear()
        running: list[Slot] = []
        for slot in group:
            slot.output_row = slot.batch_index = -1
            if slot.n_past >= len(slot.tokens):
                running.append(slot)
        if running:
            first, row = batch.add_next(
                [slot.seq_id for slot in running],
                [slot.pending for slot in running],
                [slot.n_past for slot in running],
            )
            for offset, slot in enumerate(running):
                slot.batch_index, slot.output_row = first + offset, row + offset
                slot.n_past += 1
        for slot in group:
            if slot.n_past >= len(slot.tokens) or not batch.room:
                continue
            chunk = slot.tokens[slot.n_past : slot.n_past + batch.room]
            last = slot.n_past + len(chunk) == len(slot.tokens)
            slot.output_row = batch.add_prompt(slot.seq_id, chunk, slot.n_past, output=last)
            slot.batch_index = batch.n_tokens - 1 if last else -1
            slot.n_past += len(chunk)
        self._masks = None
        result = self._run_decode(lambda: self._prepare_masks(group))
        if result != 0:
            raise RuntimeError(f"llama_decode failed ({result})")
        return batch.n_tokens - len(running)

    def _run_decode(self, meanwhile: Callable[[], None] | None = None) -> int:
        """`llama_decode` of the step batch as filled, timed. `meanwhile` is host work
        its result does not change, done while a GPU decodes (on the CPU the decode is
        done by then), and not counted as the decode's time."""
        batch, lib, ctx = self._m.batch, self._m.lib, self._m.ctx.ctx
        started = time.perf_counter()
        result = batch.launch(lib, ctx)
        launched = time.perf_counter()
        try:
            if meanwhile is not None and result == 0:
                meanwhile()
        finally:  # whatever the host work did, the step is over before anything else
            resumed = time.perf_counter()
            lib.llama_synchronize(ctx)
        if self.device_greedy is not None:
            self.device_greedy.decoded()
        self.timing.decode_seconds += launched - started + time.perf_counter() - resumed
        self.timing.decodes += 1
        self.timing.tokens += batch.n_tokens
        return result

    def _prepare_masks(self, group: list[Slot]) -> None:
        """The schema's penalty rows for the slots of the group that will choose a token
        under one (`_advance`), made from their matchers alone."""
        constrained = [slot for slot in group if slot.batch_index >= 0 and slot.under_schema]
        if constrained:
            # One constraint a model (`schema_constraint`), whichever job a slot is of.
            penalty = constrained[0].run.constraint.penalty([slot.matcher for slot in constrained])
            self._masks = (constrained, penalty)

    def _advance(self, group: list[Slot]) -> list[Completion]:
        """Choose each slot's next token from its row of logits, before the next decode
        overwrites them: greedy slots together (`_greedy`), the others by their chains."""
        ready = [slot for slot in group if slot.batch_index >= 0]
        forced = [slot for slot in ready if slot.tracker and slot.tracker.forced() is not None]
        if forced:  # a thought past its budget: its closing tokens come next
            ready = [slot for slot in ready if slot not in forced]
        if self._masks is not None:  # made while the decode ran (`_prepare_masks`)
            self._mask(*self._masks)
        unfinished = [slot for slot in ready if slot.must_go_on]
        if unfinished:
            self._logits()[np.ix_([s.output_row for s in unfinished], self._m.eog_ids)] = BLOCKED
        greedy = [slot for slot in ready if slot.sampler is None]
        sampled = [slot for slot in ready if slot.sampler is not None]
        tokens = self._greedy(greedy) if greedy else []
        lib, ctx = self._m.lib, self._m.ctx.ctx
        tokens += [
            lib.llama_sampler_sample(slot.sampler.sampler, ctx, slot.batch_index)
            for slot in sampled
        ]
        tokens += [slot.tracker.forced() for slot in forced]  # type: ignore[union-attr]
        done = []
        for slot, token in zip(greedy + sampled + forced, tokens, strict=True):
            if (completion := self._accept(slot, token)) is not None:
                done.append(completion)
        return done

    def _mask(self, slots: list[Slot], penalty: np.ndarray) -> None:
        """The schema's mask on these slots' rows (`penalty`, a row each); a slot whose
        output may still open a thought may open it (the schema applies to the answer
        after it)."""
        logits = self._logits()
        opening = [
            (slot.output_row, token)
            for slot in slots
            if slot.tracker is not None and (token := slot.tracker.may_open) is not None
        ]
        kept = [logits[row, token] for row, token in opening]
        slots[0].run.constraint.apply(logits, [slot.output_row for slot in slots], penalty)
        for (row, token), value in zip(opening, kept, strict=True):
            logits[row, token] = value

    def _greedy(self, slots: list[Slot]) -> list[int]:
        """The fast path for temperature 0 (what `create_chat_completion` runs unless told
        otherwise, with its neutral repeat penalties): one argmax over all the slots'
        rows of logits picks what llama.cpp's greedy sampler would, token for token."""
        if not self.greedy_argmax:
            lib, ctx = self._m.lib, self._m.ctx.ctx
            return [
                lib.llama_sampler_sample(self._m.greedy_chain.sampler, ctx, slot.batch_index)
                for slot in slots
            ]
        device = self.device_greedy
        chosen = [device.has(slot.seq_id) for slot in slots] if device is not None else []
        if device is not None and any(chosen):
            there = [slot for slot, on in zip(slots, chosen, strict=True) if on]
            rest = [slot for slot, on in zip(slots, chosen, strict=True) if not on]
            on_device = iter(device.tokens([slot.batch_index for slot in there]))
            here = iter(self._argmax(rest) if rest else [])
            return [next(on_device) if on else next(here) for on in chosen]
        return self._argmax(slots)

    def _argmax(self, slots: list[Slot]) -> list[int]:
        rows = [slot.output_row for slot in slots]
        n_outputs = self._m.batch.n_outputs
        return greedy_tokens(self._m.lib, self._m.ctx.ctx, n_outputs, self._m.n_vocab, rows)

    def _logits(self) -> np.ndarray:
        """The last decode's logits, a row per output: llama.cpp's buffer, not a copy."""
        pointer = self._m.lib.llama_get_logits(self._m.ctx.ctx)
        shape = (self._m.batch.n_outputs, self._m.n_vocab)
        return np.ctypeslib.as_array(pointer, shape=shape)

    def _accept(self, slot: Slot, token: int) -> Completion | None:
        """Add `token` to the slot's answer; its completion if that ends the answer."""
        reason = slot.take(token, self._m.piece_of)
        if reason is None:
            return None
        completion = slot.completion(reason, self._m.piece_of)
        self._release(slot)
        return completion

    def _release(self, slot: Slot) -> None:
        """Free the slot; its prompt's KV cells stay there for the next prompt that
        shares its start (`_free_slot`), but under batch-invariant decoding."""
        if self.batch_invariant or slot.n_past < len(slot.tokens):
            memory = self._m.lib.llama_get_memory(self._m.ctx.ctx)
            self._m.lib.llama_memory_seq_rm(memory, slot.seq_id, -1, -1)
        else:
            self._kept[slot.seq_id] = slot.tokens
        if slot.sampler is not None:
            slot.sampler.close()
        del self._slots[slot.seq_id]
        self._free.append(slot.seq_id)

    def abort(self) -> list[int]:
        indices = [c.index for c in self._failed]
        self._failed = []
        for slot in list(self._slots.values()):
            indices.append(slot.task.index)
            self._release(slot)
        return indices

    def drop(self, indices: set[int]) -> None:
        """Drop the unfinished tasks of these indices (one job's, of several sharing the
        model), leaving the others running."""
        self._failed = [c for c in self._failed if c.index not in indices]
        for slot in list(self._slots.values()):
            if slot.task.index in indices:
                self._release(slot)

    @property
    def free_slots(self) -> int:
        """How many tasks `submit` may take now."""
        return len(self._free)

    def close(self) -> None:
        if self.loaded is not None:
            self.abort()
            if self.device_greedy is not None:
                self.device_greedy.close()
            self.loaded.close()
        self.loaded, self.device_greedy = None, None


def model_key(settings: GenerationSettings) -> tuple[Any, ...]:
    """What a loaded model must match to run a job with `settings` (`LoadedModel.key`)."""
    return (*load_key(settings)[1], settings.batch_invariant)
