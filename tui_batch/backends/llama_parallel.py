"""Continuous batching on llama.cpp: up to N prompts decoded together in one context.

Each slot owns a sequence id. A step decodes, in one `llama_decode`, the next token of
every running slot and as much of newly admitted prompts as fits in `N_BATCH` tokens;
then each slot gets its next token from its own row of logits before the next decode
overwrites them (greedy slots all at once, with one argmax). A finished slot's sequence
is removed (`llama_memory_seq_rm`) and the slot refilled at once. Prompts are formatted
with the model's chat template and sampled with the same chain as
`create_chat_completion`.

Full batches round differently from one row at a time, so greedy answers may differ from
the sequential backend's after some tokens (as with vLLM or llama-server); they are the
same for the same batch shape. `batch_invariant` trades speed for answers identical,
token for token, to one prompt at a time: see `_invariant_groups`.

One thread owns the context: the engine's, which calls `step()`.
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.backends.llama_cpp import import_llama_cpp, load_key
from tui_batch.backends.llama_step import StepBatch, StepTiming, greedy_tokens
from tui_batch.core.backend import Backend, Completion, Task, TokenSink
from tui_batch.core.errors import ModelError
from tui_batch.core.jobs import BatchJob, GenerationSettings, Prompt, build_messages
from tui_batch.core.settings import MAX_PARALLEL

# What create_chat_completion uses unless told otherwise.
TOP_K, MIN_P, TYPICAL_P, PENALTY_LAST_N = 40, 0.05, 1.0, 64
LLAMA_DEFAULT_SEED = 0xFFFFFFFF
N_BATCH = 512
# On the CPU, llama.cpp multiplies 8 or more rows at once with other (tiled) kernels than
# one row at a time, which round differently. So batch-invariant decoding on the CPU
# decodes next tokens in groups of at most 7 (measured identical to one at a time on the
# demo and the 1.1B model). A GPU picks its kernels by batch size in ways we have not
# measured: there it decodes one row at a time, which is what one prompt at a time does.
CPU_EXACT_GROUP = 7
GPU_EXACT_GROUP = 1
# A shared prompt prefix shorter than this is decoded with each prompt: copying a
# sequence's KV cells costs more than decoding a few tokens.
MIN_SHARED_PREFIX = 8


@dataclass(slots=True)
class _Slot:
    seq_id: int
    task: Task
    tokens: list[int]
    max_tokens: int
    stop: list[bytes]
    sampler: Any  # llama.cpp's sampler chain; None for greedy, chosen by argmax
    n_past: int = 0  # tokens of this sequence already in the KV cache
    pending: int = -1  # sampled token still to be decoded
    generated: int = 0
    text: bytearray = field(default_factory=bytearray)
    streamed: int = 0  # bytes of `text` already sent to the token sink
    batch_index: int = -1  # this slot's token with logits in the current batch
    output_row: int = -1  # its row in the current decode's logits


class ParallelLlamaBackend(Backend):
    """Holds up to `parallel` prompts in flight in one llama.cpp context."""

    def __init__(self, model_path: str | Path, parallel: int, greedy_argmax: bool = True) -> None:
        """`greedy_argmax=False` samples greedy slots with llama.cpp's chain, one by one,
        as the fast path's reference."""
        if not 1 <= parallel <= MAX_PARALLEL:
            raise ModelError(f"Parallel: must be 1 to {MAX_PARALLEL} here, got {parallel}")
        self.model_path = Path(model_path)
        self.capacity = parallel
        self._load_key: tuple[Any, ...] | None = None
        self._model: Any = None
        self._ctx: Any = None
        self._step_batch: StepBatch | None = None
        self._greedy_chain: Any = None
        self._slots: dict[int, _Slot] = {}
        self._free = deque(range(parallel))
        self._failed: list[Completion] = []
        self.settings = GenerationSettings()
        self.on_token: TokenSink | None = None
        self.greedy_argmax = greedy_argmax
        self.batch_invariant = False
        self.timing = StepTiming()

    # Loading ------------------------------------------------------------------------

    def begin(self, job: BatchJob, on_token: TokenSink | None = None) -> None:
        self.settings = job.settings
        self.batch_invariant = job.settings.batch_invariant
        super().begin(job, on_token)
        self._prefix = self._shared_prefix(job.settings.system_prompt)
        self._prefix_ready = False

    def open(self, settings: GenerationSettings) -> None:
        threads, key = load_key(settings)
        key += (settings.batch_invariant,)
        if self._ctx is not None and key == self._load_key:
            return
        self.close()
        llama_cpp = self._llama_cpp = import_llama_cpp()
        from llama_cpp import _internals, llama_chat_format
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # llama.cpp's log lines would land on the user's terminal
        if not self.model_path.is_file():
            raise ModelError(f"Model file not found: {self.model_path}")
        model_params = llama_cpp.llama_model_default_params()
        layers = settings.n_gpu_layers
        model_params.n_gpu_layers = 0x7FFFFFFF if layers == -1 else layers
        try:
            self._model = _internals.LlamaModel(
                path_model=str(self.model_path), params=model_params, verbose=False
            )
            params = llama_cpp.llama_context_default_params()
            # One sequence per slot, plus one holding the prompt prefix all slots share.
            params.n_ctx = settings.n_ctx * (self.capacity + 1)
            params.n_seq_max = self.capacity + 1
            params.n_batch = params.n_ubatch = N_BATCH
            params.n_threads = params.n_threads_batch = threads
            params.kv_unified = False  # each sequence its own n_ctx cells, as alone
            # Flash attention where the hardware has it (about 16% more tokens/s at 16
            # slots on the CPU), except where answers must match `Llama`, which has it off.
            params.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
                if settings.batch_invariant
                else llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
            )
            params.no_perf = True
            self._ctx = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            self.close()
            raise ModelError(f"Cannot load model {self.model_path}: {exc}") from None
        self._n_ctx_seq = settings.n_ctx
        self._exact_group = GPU_EXACT_GROUP if settings.n_gpu_layers else CPU_EXACT_GROUP
        self._step_batch = StepBatch(llama_cpp, N_BATCH)
        self._vocab = self._model.vocab
        self._n_vocab = self._model.n_vocab()
        self._formatter = self._chat_formatter(llama_chat_format)
        self._piece = (ctypes.c_char * 64)()
        self._pieces: dict[int, bytes | None] = {}
        self._greedy_chain = self._sampler(0.0, 1.0, None)
        self._load_key = key
        self._prefix: list[int] = []
        self._prefix_ready = False

    def _chat_formatter(self, llama_chat_format: Any) -> Any:
        """The model's own chat template, set up as `Llama` sets it up."""
        metadata = self._model.metadata()
        template = metadata.get("tokenizer.chat_template")
        if template is None:
            raise ModelError(f"{self.model_path.name} has no chat template")
        model = self._model
        eos, bos = model.token_eos(), model.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def _tokens(self, messages: list[dict[str, Any]]) -> tuple[list[int], Any]:
        formatted = self._formatter(messages=messages)
        tokens = self._model.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        return tokens, formatted

    def _shared_prefix(self, system_prompt: str | None) -> list[int]:
        """The tokens every prompt of the job starts with: the chat template's opening
        and the job's system prompt. Found by formatting two different one-line chats."""
        first, _ = self._tokens(build_messages(Prompt("a"), system_prompt))
        second, _ = self._tokens(build_messages(Prompt("b"), system_prompt))
        length = 0
        while length < min(len(first), len(second)) and first[length] == second[length]:
            length += 1
        # The last shared token may merge with the text after it in a real prompt.
        return first[: max(0, length - 1)]

    def _decode_prefix(self) -> None:
        """Decode the shared prefix once, into its own sequence, for slots to copy."""
        self._prefix_ready = True
        if len(self._prefix) < MIN_SHARED_PREFIX:
            self._prefix = []
            return
        memory = self._llama_cpp.llama_get_memory(self._ctx.ctx)
        self._llama_cpp.llama_memory_seq_rm(memory, self.capacity, -1, -1)
        batch = self._step_batch
        for start in range(0, len(self._prefix), batch.size):
            batch.clear()
            batch.add_prompt(self.capacity, self._prefix[start : start + batch.size], start, False)
            if batch.decode(self._llama_cpp, self._ctx.ctx) != 0:
                self._llama_cpp.llama_memory_seq_rm(memory, self.capacity, -1, -1)
                self._prefix = []
                return

    def _start_from_prefix(self, slot: _Slot) -> None:
        """Copy the shared prefix's KV into the slot, so its prefill starts after it."""
        prefix = self._prefix
        if prefix and slot.tokens[: len(prefix)] == prefix and len(slot.tokens) > len(prefix):
            memory = self._llama_cpp.llama_get_memory(self._ctx.ctx)
            self._llama_cpp.llama_memory_seq_cp(memory, self.capacity, slot.seq_id, -1, -1)
            slot.n_past = len(prefix)

    # Tasks --------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._slots) + len(self._failed)

    def submit(self, task: Task) -> None:
        settings, options = self.settings, task.prompt.options
        tokens, formatted = self._tokens(build_messages(task.prompt, settings.system_prompt))
        if len(tokens) >= self._n_ctx_seq:
            self._failed.append(
                Completion(
                    task.index,
                    error=f"Prompt is {len(tokens)} tokens but the context holds "
                    f"{self._n_ctx_seq}: shorten it or raise --n-ctx",
                    tokens_input=len(tokens),
                    finish_reason=None,
                    retryable=False,
                )
            )
            return
        stop = options.get("stop", settings.stop)
        stop = [stop] if isinstance(stop, str) else list(stop or [])
        template_stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        stop += [s for s in template_stop if s]
        max_tokens = options.get("max_tokens", settings.max_tokens) or self._n_ctx_seq
        max_tokens = min(max_tokens, self._n_ctx_seq - len(tokens))
        temperature = options.get("temperature", settings.temperature)
        sampler = None  # greedy: see `_greedy`
        if temperature != 0:
            top_p, seed = options.get("top_p", settings.top_p), options.get("seed", settings.seed)
            sampler = self._sampler(temperature, top_p, seed)
        seq_id = self._free.popleft()
        self._slots[seq_id] = _Slot(
            seq_id=seq_id,
            task=task,
            tokens=tokens,
            max_tokens=max_tokens,
            stop=[s.encode("utf-8") for s in stop],
            sampler=sampler,
        )

    def _sampler(self, temperature: float, top_p: float, seed: int | None) -> Any:
        """The chain `Llama._init_sampler` builds for these settings."""
        from llama_cpp import _internals

        sampler = _internals.LlamaSampler()
        sampler.add_penalties(
            n_vocab=self._model.n_vocab(),
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

    # Decoding -----------------------------------------------------------------------

    def step(self) -> list[Completion]:
        """Decode once or a few times for every slot: its prompt or its next token."""
        started = time.perf_counter()
        done, self._failed = self._failed, []
        if not self._slots:
            return done
        if not self._prefix_ready:
            self._decode_prefix()
        slots = list(self._slots.values())
        for slot in slots:
            if slot.n_past == 0:
                self._start_from_prefix(slot)
        groups = self._invariant_groups(slots) if self.batch_invariant else [slots]
        for group in groups:
            self._decode(group)
            done += self._advance(group)
        self.timing.steps += 1
        self.timing.step_seconds += time.perf_counter() - started
        return done

    def _invariant_groups(self, slots: list[_Slot]) -> list[list[_Slot]]:
        """The decodes that keep greedy answers identical to one prompt at a time: each
        new prompt prefilled alone (as it is then), next tokens in groups of at most
        `exact_group` rows (the kernels one row at a time use), as evenly as that allows."""
        prefilling = [slot for slot in slots if slot.n_past < len(slot.tokens)]
        if prefilling:
            return [[slot] for slot in prefilling]
        count = -(-len(slots) // self._exact_group)
        return [slots[i::count] for i in range(count)]

    def _decode(self, group: list[_Slot]) -> None:
        """One `llama_decode`: the next token of each running slot in the group, then the
        prompts of new ones, as much as fits (a prompt left over goes on next step)."""
        batch = self._step_batch
        batch.clear()
        running: list[_Slot] = []
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
        started = time.perf_counter()
        result = batch.decode(self._llama_cpp, self._ctx.ctx)
        self.timing.decode_seconds += time.perf_counter() - started
        self.timing.decodes += 1
        self.timing.tokens += batch.n_tokens
        if result != 0:
            raise RuntimeError(f"llama_decode failed ({result})")

    def _advance(self, group: list[_Slot]) -> list[Completion]:
        """Choose each slot's next token from its row of logits, before the next decode
        overwrites them: greedy slots together (`_greedy`), the others by their chains."""
        done: list[Completion] = []
        ready = [slot for slot in group if slot.batch_index >= 0]
        greedy = [slot for slot in ready if slot.sampler is None]
        chosen = self._greedy(greedy) if greedy else []
        lib, ctx = self._llama_cpp, self._ctx.ctx
        for slot in ready:
            if slot.sampler is not None:
                token = lib.llama_sampler_sample(slot.sampler.sampler, ctx, slot.batch_index)
                chosen.append(token)
                greedy.append(slot)
        for slot, token in zip(greedy, chosen, strict=True):
            completion = self._accept(slot, token)
            if completion is not None:
                done.append(completion)
        return done

    def _greedy(self, slots: list[_Slot]) -> list[int]:
        """The fast path for temperature 0 (what `create_chat_completion` runs unless told
        otherwise, with its neutral repeat penalties): one argmax over all the slots'
        rows of logits picks what llama.cpp's greedy sampler would, token for token."""
        if not self.greedy_argmax:
            lib, ctx = self._llama_cpp, self._ctx.ctx
            return [
                lib.llama_sampler_sample(self._greedy_chain.sampler, ctx, slot.batch_index)
                for slot in slots
            ]
        rows = [slot.output_row for slot in slots]
        n_outputs = self._step_batch.n_outputs
        return greedy_tokens(self._llama_cpp, self._ctx.ctx, n_outputs, self._n_vocab, rows)

    def _accept(self, slot: _Slot, token: int) -> Completion | None:
        """Add `token` to the slot's answer; its completion if that ends the answer."""
        try:
            piece = self._pieces[token]
        except KeyError:
            piece = self._pieces[token] = self._piece_of(token)
        if piece is None:
            return self._finish(slot, "stop")
        slot.generated += 1
        text, before = slot.text, len(slot.text)
        text += piece
        for stop in slot.stop:  # a stop string not there before ends in the new piece
            at = text.find(stop, max(0, before - len(stop) + 1))
            if at >= 0:
                del text[at:]
                return self._finish(slot, "stop")
        if slot.generated >= slot.max_tokens:
            return self._finish(slot, "length")
        slot.pending = token
        self._stream(slot)
        return None

    def _piece_of(self, token: int) -> bytes | None:
        """The token's text as bytes, or None for an end-of-generation token."""
        lib = self._llama_cpp
        if lib.llama_vocab_is_eog(self._vocab, token):
            return None
        size = lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        if size < 0:  # longer than our buffer: ask again with room for it
            buffer = (ctypes.c_char * -size)()
            size = lib.llama_token_to_piece(self._vocab, token, buffer, -size, 0, False)
            return bytes(buffer[:size])
        return bytes(self._piece[:size])

    def _stream(self, slot: _Slot) -> None:
        """Send the text that can no longer change: not a possible start of a stop string,
        not an unfinished UTF-8 character."""
        if self.on_token is None:
            return
        text = slot.text
        end = len(text)
        for stop in slot.stop:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    end = min(end, len(text) - size)
                    break
        while end > slot.streamed:
            try:
                piece = bytes(text[slot.streamed : end]).decode("utf-8")
            except UnicodeDecodeError:
                end -= 1
                continue
            slot.streamed = end
            if piece:
                self.on_token(slot.task.index, piece)
            return

    def _finish(self, slot: _Slot, reason: str) -> Completion:
        text = bytes(slot.text).decode("utf-8", errors="ignore")
        if self.on_token is not None:
            rest = bytes(slot.text[slot.streamed :]).decode("utf-8", errors="ignore")
            if rest:
                self.on_token(slot.task.index, rest)
        self._release(slot)
        return Completion(
            slot.task.index,
            response_text=text,
            tokens_input=len(slot.tokens),
            tokens_output=slot.generated,
            finish_reason=reason,
        )

    def _release(self, slot: _Slot) -> None:
        memory = self._llama_cpp.llama_get_memory(self._ctx.ctx)
        self._llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, -1, -1)
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

    def close(self) -> None:
        if self._ctx is not None:
            self.abort()
        for part in (self._greedy_chain, self._ctx, self._model):
            if part is not None:
                part.close()
        self._greedy_chain = self._step_batch = self._ctx = self._model = None
        self._load_key = None
