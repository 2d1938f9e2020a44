"""What the parallel backend loads: a model and one llama.cpp context holding a sequence
for each slot and one for the prompt prefix they share (`load_context`), kept together
in a `LoadedModel` that `close` drops."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_batch.backends.llama.build_check import check_build
from tui_batch.backends.llama.chat import ChatFormat, sampler_chain
from tui_batch.backends.llama.constraint import Made, make_constraint
from tui_batch.backends.llama.loading import import_llama_cpp, load_failure, quiet_model
from tui_batch.backends.llama.memory import kv_bytes_per_cell, physical_memory, slots_that_fit
from tui_batch.backends.llama.step import StepBatch
from tui_batch.core.settings import GenerationSettings

N_BATCH = 512
# On the CPU, llama.cpp multiplies 8 or more rows at once with other (tiled) kernels than
# one row at a time, which round differently. So batch-invariant decoding on the CPU
# decodes next tokens in groups of at most 7 (measured identical to one at a time on the
# demo and the 1.1B model). A GPU picks its kernels by batch size in ways we have not
# measured: there it decodes one row at a time, which is what one prompt at a time does.
CPU_EXACT_GROUP = 7
GPU_EXACT_GROUP = 1


@dataclass(slots=True)
class LoadedModel:
    """What a loaded model holds, made by `open` and dropped by `close`: llama.cpp's
    module (`lib`), the model and its context, the batch every step decodes, the chat
    format, the vocabulary, and each sequence's context (`n_ctx`, what one prompt and
    its answer may hold)."""

    key: tuple[Any, ...]  # the settings it was loaded with (see `load_key`)
    lib: Any
    model: Any
    ctx: Any
    batch: StepBatch
    chat: ChatFormat
    n_ctx: int
    on_gpu: bool
    vocab: Any = None
    n_vocab: int = 0
    # Next tokens of a batch-invariant decode are grouped at most this many rows.
    exact_group: int = CPU_EXACT_GROUP
    # llama.cpp's greedy chain, when greedy slots are sampled by it, not by an argmax.
    greedy_chain: Any = None
    piece: Any = field(default_factory=lambda: (ctypes.c_char * 64)())
    pieces: dict[int, bytes | None] = field(default_factory=dict)
    # What enforces a schema on this model (made when a job first has one), or why
    # nothing can.
    constraint: Made | None = None
    _eog: list[int] | None = None

    @property
    def eog_ids(self) -> list[int]:
        """The vocabulary's end-of-generation tokens (found once)."""
        if self._eog is None:
            is_eog, vocab = self.lib.llama_vocab_is_eog, self.vocab
            self._eog = [t for t in range(self.n_vocab) if is_eog(vocab, t)]
        return self._eog

    def piece_of(self, token: int) -> bytes | None:
        """The token's text as bytes (kept once asked for), or None for an
        end-of-generation token."""
        try:
            return self.pieces[token]
        except KeyError:
            pass
        lib, vocab = self.lib, self.vocab
        piece = None
        if not lib.llama_vocab_is_eog(vocab, token):
            size = lib.llama_token_to_piece(vocab, token, self.piece, len(self.piece), 0, False)
            if size < 0:  # longer than our buffer: ask again with room for it
                buffer = (ctypes.c_char * -size)()
                size = lib.llama_token_to_piece(vocab, token, buffer, -size, 0, False)
                piece = bytes(buffer[:size])
            else:
                piece = bytes(self.piece[:size])
        self.pieces[token] = piece
        return piece

    def schema_constraint(self) -> Made:
        """The model's SchemaConstraint, made once (or None, and why)."""
        if self.constraint is None:
            self.constraint = make_constraint(self.lib, self.vocab, self.n_vocab)
        return self.constraint

    def __post_init__(self) -> None:
        self.vocab = self.model.vocab
        self.n_vocab = self.model.n_vocab()
        self.exact_group = GPU_EXACT_GROUP if self.on_gpu else CPU_EXACT_GROUP

    def close(self) -> None:
        for part in (self.greedy_chain, self.ctx, self.model):
            if part is not None:
                part.close()


def load_context(
    model_path: Path,
    settings: GenerationSettings,
    threads: int,
    key: tuple[Any, ...],
    capacity: int,
    greedy_chain: bool = False,
) -> tuple[LoadedModel, int]:
    """The model loaded for `settings` in a context of `capacity` sequences, one a slot
    (fewer where `parallel` is automatic and their KV cache would not fit in memory: the
    slots it holds are returned with it), plus one for the prompt prefix all share; with
    `greedy_chain`, llama.cpp's greedy sampler too. A ModelError says why it cannot."""
    llama_cpp = import_llama_cpp()
    from llama_cpp import _internals

    model_params = llama_cpp.llama_model_default_params()
    layers = settings.n_gpu_layers
    model_params.n_gpu_layers = 0x7FFFFFFF if layers == -1 else layers
    check_build(model_path, layers)
    model = quiet_model(model_path, model_params)
    ctx = None
    try:
        # Each sequence's cells in whole 256-cell blocks (llama.cpp rounds to those, and
        # says so on the terminal otherwise); prompts are still held to `n_ctx`.
        cells = -(-settings.n_ctx // 256) * 256
        if settings.parallel is None and not settings.n_gpu_layers:
            per_slot = kv_bytes_per_cell(llama_cpp, model.model) * cells
            capacity = slots_that_fit(per_slot, capacity, physical_memory())
        params = llama_cpp.llama_context_default_params()
        # One sequence per slot, plus one holding the prompt prefix all slots share.
        params.n_ctx = cells * (capacity + 1)
        params.n_seq_max = capacity + 1
        params.n_batch = params.n_ubatch = N_BATCH
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False  # each sequence its own n_ctx cells, as alone
        # Flash attention where the hardware has it (about 16% more tokens/s at 16 slots
        # on the CPU), except where answers must match `Llama`, which has it off.
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            if settings.batch_invariant
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
        )
        params.no_perf = True
        ctx = _internals.LlamaContext(model=model, params=params, verbose=True)
        loaded = LoadedModel(
            key,
            llama_cpp,
            model,
            ctx,
            StepBatch(llama_cpp, N_BATCH),
            ChatFormat(model, model_path.name),
            n_ctx=settings.n_ctx,
            on_gpu=bool(settings.n_gpu_layers),
        )
    except (ValueError, RuntimeError, OSError) as exc:
        for part in (ctx, model):
            if part is not None:
                part.close()
        raise load_failure(model_path, exc) from None
    if greedy_chain:  # the reference the fast path is checked against
        loaded.greedy_chain = sampler_chain(model, 0.0, 1.0, None)
    return loaded, capacity
