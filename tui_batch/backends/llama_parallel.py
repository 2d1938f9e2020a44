"""Continuous batching on llama.cpp: up to N prompts decoded together in one context.

Each slot owns a sequence id. A step either prefills the prompts of newly admitted slots
(several prompts in one `llama_decode`, longer ones over several steps) or decodes the
next token of every slot together, then samples each slot from its own row of logits
before the next decode overwrites them. A finished slot's sequence is removed
(`llama_memory_seq_rm`) and the slot refilled at once. Prompts are formatted with the
model's chat template and sampled with the same chain as `create_chat_completion`, so
greedy answers match the sequential backend's, token for token.

One thread owns the context: the engine's, which calls `step()`.
"""

from __future__ import annotations

import ctypes
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.backends.llama_cpp import import_llama_cpp, load_key
from tui_batch.core.backend import Backend, Completion, Task, TokenSink
from tui_batch.core.errors import ModelError
from tui_batch.core.jobs import BatchJob, GenerationSettings, Prompt, build_messages
from tui_batch.core.settings import MAX_PARALLEL

# What create_chat_completion uses unless told otherwise.
TOP_K, MIN_P, TYPICAL_P, PENALTY_LAST_N = 40, 0.05, 1.0, 64
LLAMA_DEFAULT_SEED = 0xFFFFFFFF
N_BATCH = 512
# On the CPU, llama.cpp multiplies 8 or more rows at once with other (tiled) kernels than
# one row at a time, which round differently: greedy answers then drift from the
# sequential ones. So on the CPU each prompt is prefilled alone (as it is sequentially)
# and next tokens are decoded in groups of at most 7, which keeps answers identical and
# costs little, a CPU being compute-bound there (7 slots gave about the throughput of 16
# on the 2-core build machine). On a GPU every slot goes into one decode.
CPU_DECODE_GROUP = 7
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
    sampler: Any
    n_past: int = 0  # tokens of this sequence already in the KV cache
    pending: int = -1  # sampled token still to be decoded
    generated: int = 0
    text: bytearray = field(default_factory=bytearray)
    streamed: int = 0  # bytes of `text` already sent to the token sink
    batch_index: int = -1  # this slot's row of logits in the current batch


class ParallelLlamaBackend(Backend):
    """Holds up to `parallel` prompts in flight in one llama.cpp context."""

    def __init__(self, model_path: str | Path, parallel: int) -> None:
        if not 1 <= parallel <= MAX_PARALLEL:
            raise ModelError(f"Parallel: must be 1 to {MAX_PARALLEL} here, got {parallel}")
        self.model_path = Path(model_path)
        self.capacity = parallel
        self._load_key: tuple[Any, ...] | None = None
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._slots: dict[int, _Slot] = {}
        self._free = deque(range(parallel))
        self._failed: list[Completion] = []
        self.settings = GenerationSettings()
        self.on_token: TokenSink | None = None

    # Loading ------------------------------------------------------------------------

    def begin(self, job: BatchJob, on_token: TokenSink | None = None) -> None:
        self.settings = job.settings
        super().begin(job, on_token)
        self._prefix = self._shared_prefix(job.settings.system_prompt)
        self._prefix_ready = False

    def open(self, settings: GenerationSettings) -> None:
        threads, key = load_key(settings)
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
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            params.no_perf = True
            self._ctx = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            self.close()
            raise ModelError(f"Cannot load model {self.model_path}: {exc}") from None
        self._n_ctx_seq = settings.n_ctx
        self._exact = settings.n_gpu_layers == 0
        self._group = CPU_DECODE_GROUP if self._exact else self.capacity
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        self._vocab = self._model.vocab
        self._formatter = self._chat_formatter(llama_chat_format)
        self._piece = (ctypes.c_char * 64)()
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
        batch = self._batch
        batch.n_tokens = 0
        for position, token in enumerate(self._prefix):
            batch.token[position] = token
            batch.pos[position] = position
            batch.n_seq_id[position] = 1
            batch.seq_id[position][0] = self.capacity
            batch.logits[position] = False
        batch.n_tokens = len(self._prefix)
        if self._llama_cpp.llama_decode(self._ctx.ctx, batch) != 0:
            self._prefix = []

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
        seq_id = self._free.popleft()
        self._slots[seq_id] = _Slot(
            seq_id=seq_id,
            task=task,
            tokens=tokens,
            max_tokens=max_tokens,
            stop=[s.encode("utf-8") for s in stop],
            sampler=self._sampler(
                options.get("temperature", settings.temperature),
                options.get("top_p", settings.top_p),
                options.get("seed", settings.seed),
            ),
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
        """Prefill new prompts if any are waiting, else decode one token for every slot."""
        done, self._failed = self._failed, []
        if not self._slots:
            return done
        if not self._prefix_ready:
            self._decode_prefix()
        for slot in self._slots.values():
            if slot.n_past == 0:
                self._start_from_prefix(slot)
        slots = list(self._slots.values())
        prefilling = [s for s in slots if s.n_past < len(s.tokens)]
        if prefilling:
            groups = [[slot] for slot in prefilling] if self._exact else [prefilling]
        else:
            count = -(-len(slots) // self._group)  # as few decodes as the group size allows,
            groups = [slots[i::count] for i in range(count)]  # evenly filled
        for group in groups:
            self._decode(group, prefill=bool(prefilling))
            for slot in group:
                if slot.batch_index >= 0:
                    completion = self._sample(slot)
                    if completion is not None:
                        done.append(completion)
        return done

    def _decode(self, group: list[_Slot], prefill: bool) -> None:
        """One `llama_decode` of the group's prompt tokens (as many as fit) or next tokens."""
        batch = self._batch
        batch.n_tokens = 0
        for slot in group:
            slot.batch_index = -1
            if not prefill:
                slot.batch_index = self._add(slot, slot.pending, logits=True)
                continue
            while slot.n_past < len(slot.tokens) and batch.n_tokens < N_BATCH:
                last = slot.n_past == len(slot.tokens) - 1
                index = self._add(slot, slot.tokens[slot.n_past], logits=last)
                if last:
                    slot.batch_index = index
        result = self._llama_cpp.llama_decode(self._ctx.ctx, batch)
        if result != 0:
            raise RuntimeError(f"llama_decode failed ({result})")

    def _add(self, slot: _Slot, token: int, logits: bool) -> int:
        batch = self._batch
        index = batch.n_tokens
        batch.token[index] = token
        batch.pos[index] = slot.n_past
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = slot.seq_id
        batch.logits[index] = logits
        batch.n_tokens = index + 1
        slot.n_past += 1
        return index

    def _sample(self, slot: _Slot) -> Completion | None:
        lib = self._llama_cpp
        token = lib.llama_sampler_sample(slot.sampler.sampler, self._ctx.ctx, slot.batch_index)
        if lib.llama_vocab_is_eog(self._vocab, token):
            return self._finish(slot, "stop")
        slot.generated += 1
        size = lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        slot.text += self._piece[:size]
        for stop in slot.stop:
            if stop in slot.text:
                del slot.text[slot.text.index(stop) :]
                return self._finish(slot, "stop")
        if slot.generated >= slot.max_tokens:
            return self._finish(slot, "length")
        slot.pending = token
        self._stream(slot)
        return None

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
        if self._batch is not None:
            self._llama_cpp.llama_batch_free(self._batch)
        for part in (self._ctx, self._model):
            if part is not None:
                part.close()
        self._batch = self._ctx = self._model = None
        self._load_key = None
