"""The numpy-backed llama_batch and the greedy argmax, without a model: what llama.cpp
reads through the struct's pointers is what a step wrote into the arrays. An answer's
text as it streams, and the step clock."""

from __future__ import annotations

import ctypes
import time
from types import SimpleNamespace

import llama_cpp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_batch.backends.llama.answer import GeneratedText
from tui_batch.backends.llama.memory import slots_that_fit
from tui_batch.backends.llama.step import StepBatch, StepTiming, greedy_tokens


def test_rows_written_as_slices_are_what_the_struct_points_at():
    batch = StepBatch(llama_cpp, 16)
    assert batch.add_next([3, 5], [101, 102], [7, 9]) == (0, 0)
    assert batch.add_prompt(2, [11, 12, 13], start=4, output=False) == -1
    assert batch.add_prompt(4, [21, 22], start=0, output=True) == 2
    assert (batch.n_tokens, batch.n_outputs, batch.room) == (7, 3, 9)
    struct = batch.struct
    struct.n_tokens = batch.n_tokens
    rows = [
        (struct.token[i], struct.pos[i], struct.n_seq_id[i], struct.seq_id[i][0], struct.logits[i])
        for i in range(batch.n_tokens)
    ]
    assert rows == [
        (101, 7, 1, 3, 1),
        (102, 9, 1, 5, 1),
        (11, 4, 1, 2, 0),
        (12, 5, 1, 2, 0),
        (13, 6, 1, 2, 0),
        (21, 0, 1, 4, 0),
        (22, 1, 1, 4, 1),
    ]
    batch.clear()
    assert batch.add_next([1], [5], [0]) == (0, 0) and batch.n_tokens == 1


def _logits_of(array: np.ndarray) -> SimpleNamespace:
    """llama_get_logits over `array`, as llama.cpp hands its output buffer over."""
    pointer = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    return SimpleNamespace(llama_get_logits=lambda ctx: pointer)


def _first_maximum(row: list[float]) -> int:
    """llama.cpp's greedy sampler: the first candidate with the highest logit."""
    best = 0
    for index, logit in enumerate(row):
        if logit > row[best]:
            best = index
    return best


@given(
    st.lists(
        st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), min_size=6, max_size=6),
        min_size=1,
        max_size=5,
    ),
    st.data(),
)
def test_greedy_takes_the_first_highest_logit_of_each_row(rows, data):
    array = np.array(rows, dtype=np.float32)
    lib = _logits_of(array)
    wanted = data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, unique=True))
    chosen = greedy_tokens(lib, None, len(rows), 6, wanted)
    assert chosen == [_first_maximum(rows[row]) for row in wanted]
    assert greedy_tokens(lib, None, len(rows), 6, list(range(len(rows)))) == [
        _first_maximum(row) for row in rows
    ]


def test_automatic_slots_keep_their_kv_cache_within_a_quarter_of_memory():
    gib = 2**30
    assert slots_that_fit(gib, 16, 64 * gib) == 15  # 16 GiB: 15 slots and the prefix's
    assert slots_that_fit(gib // 16, 16, 64 * gib) == 16
    assert slots_that_fit(8 * gib, 16, 16 * gib) == 1  # never none
    assert slots_that_fit(gib, 16, None) == 16  # memory unknown: as asked


def _held_back_before(text: bytes, stops: list[bytes]) -> int:
    """Where streaming must stop: before the longest end of the text that a stop string
    begins with (the rule as first written, one suffix length after another)."""
    end = len(text)
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                end = min(end, len(text) - size)
                break
    return end


_ALPHABET = b"ab<|\xc3\xa9\xe2\x82\xac\xff"  # ASCII, stops' bytes, UTF-8 parts, no UTF-8
_BYTES = st.binary(min_size=1, max_size=4).map(
    lambda raw: bytes(_ALPHABET[byte % len(_ALPHABET)] for byte in raw)
)


@given(st.lists(_BYTES, max_size=3), st.lists(_BYTES, max_size=30))
def test_streamed_text_is_the_final_text_held_back_only_where_a_stop_may_begin(stops, pieces):
    answer = GeneratedText(stops)
    streamed, stopped = [], False
    for piece in pieces:
        if stopped := answer.add(piece):
            break
        before = answer.streamed
        streamed.append(answer.settled())
        # Never past a possible stop string's start; up to it otherwise.
        assert answer.streamed == max(before, _held_back_before(bytes(answer.text), stops))
    streamed.append(answer.rest())
    # Pieces cut anywhere, characters split, bytes that are no UTF-8 at all: what was
    # streamed is the final answer; ended by a stop string, the answer ends before it.
    assert "".join(streamed) == answer.final()
    if not stopped:
        assert not any(stop in bytes(answer.text) for stop in stops)


def test_bytes_that_are_no_utf8_do_not_hold_the_stream_back():
    answer = GeneratedText([b"<|end|>"])
    assert answer.add(b"ok \xff") is False and answer.settled() == "ok "
    assert answer.add(b" then \xe2\x82") is False and answer.settled() == " then "
    assert answer.add(b"\xac <|") is False and answer.settled() == "\u20ac "
    assert answer.add(b"end|> more") is True and answer.rest() == ""
    assert answer.final() == "ok  then \u20ac "


def test_step_timing_bounds_the_generation_phase_after_the_last_prefill():
    timing = StepTiming()
    start = time.perf_counter()
    timing.step_done(start, prompt_tokens=100, generated=4)
    prefilled = timing.prefill_ended_at
    timing.step_done(time.perf_counter(), prompt_tokens=0, generated=4)
    timing.step_done(time.perf_counter(), prompt_tokens=0, generated=3)
    assert (timing.steps, timing.prompt_tokens, timing.generated) == (3, 100, 11)
    assert timing.first_step_at == start and timing.prefill_ended_at == prefilled
    assert timing.generated_since_prefill == 7
    assert timing.last_step_at >= prefilled >= start
    timing.step_done(time.perf_counter(), prompt_tokens=20, generated=5)  # a late prompt
    assert timing.generated_since_prefill == 0 and timing.prefill_ended_at > prefilled
    figures = timing.to_dict()
    assert figures["other_seconds"] == figures["step_seconds"] - figures["decode_seconds"]


def test_host_work_runs_while_a_decode_runs_and_is_not_counted_as_the_decodes():
    """On a GPU `llama_decode` returns once the step is queued: the loop makes the
    schema's masks then, and waits for the step after (`_run_decode`)."""
    from tui_batch.backends.llama.parallel import ParallelLlamaBackend

    calls: list[str] = []
    results = iter([0, 1])
    lib = SimpleNamespace(
        llama_decode=lambda ctx, batch: calls.append("launch") or next(results),
        llama_synchronize=lambda ctx: calls.append("wait"),
    )
    backend = ParallelLlamaBackend("unused.gguf", 2)
    backend.loaded = SimpleNamespace(
        lib=lib, batch=StepBatch(llama_cpp, 4), ctx=SimpleNamespace(ctx=None)
    )

    def meanwhile() -> None:
        calls.append("masks")
        time.sleep(0.2)

    assert backend._run_decode(meanwhile) == 0
    assert calls == ["launch", "masks", "wait"]
    assert backend.timing.decodes == 1 and backend.timing.decode_seconds < 0.1
    calls.clear()
    assert backend._run_decode(meanwhile) == 1  # a failed decode: nothing to prepare for
    assert calls == ["launch", "wait"]

    def broken() -> None:
        raise ValueError("a schema's matcher failed")

    calls.clear()
    results = iter([0])
    with pytest.raises(ValueError):
        backend._run_decode(broken)
    assert calls == ["launch", "wait"]  # the step is over before the error goes on
