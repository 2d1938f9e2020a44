"""Continuous batching on the real demo model: full batches by default (one decode a step,
greedy by one argmax that picks what llama.cpp's chain picks), answers identical to one at
a time with batch_invariant, once each, stoppable."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from tui_batch.backends.llama.context import N_BATCH
from tui_batch.backends.llama.parallel import ParallelLlamaBackend
from tui_batch.backends.llama.sequential import LlamaCppBackend
from tui_batch.core import events
from tui_batch.core.jobs import GenerationSettings, JobStatus, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompts import load_prompt_file

from conftest import EXAMPLES
from support.cli import kill_then_resume

pytestmark = pytest.mark.model
SETTINGS = GenerationSettings(max_tokens=32, temperature=0.0, n_ctx=1024, n_threads=1)
INVARIANT = replace(SETTINGS, batch_invariant=True)


def run(backend, prompts, settings=SETTINGS, **kwargs):
    processor = BatchProcessor()
    job = processor.create_job("demo", prompts, settings=settings)
    backend.open(settings)
    try:
        return job, processor.process_batch(job, backend, **kwargs)
    finally:
        backend.close()


def test_batch_invariant_answers_equal_the_sequential_ones(demo_model):
    prompts = load_prompt_file(EXAMPLES / "batch_prompts.txt").prompts
    _, sequential = run(LlamaCppBackend(demo_model), prompts)
    streamed: dict[int, str] = {}

    def on_event(event):
        if isinstance(event, events.TokensStreamed):
            streamed[event.index] = streamed.get(event.index, "") + event.text

    backend = ParallelLlamaBackend(demo_model, 16)
    job, parallel = run(backend, prompts, INVARIANT, on_event=on_event)
    assert job.status is JobStatus.COMPLETED
    assert backend.timing.decodes > backend.timing.steps  # groups of at most 7
    for seq, par in zip(sequential, parallel, strict=True):
        assert par.response_text == seq.response_text, par.prompt_index
        assert (par.tokens_input, par.tokens_output) == (seq.tokens_input, seq.tokens_output)
        assert par.finish_reason == seq.finish_reason
        assert streamed[par.prompt_index] == par.response_text


def test_full_batches_decode_once_a_step_and_repeat_themselves(demo_model):
    """The default: every running slot's next token and new prompts in one decode, the
    same answers for the same batch shape, and greedy by argmax = greedy by the chain."""
    prompts = load_prompt_file(EXAMPLES / "batch_prompts.txt").prompts
    backend = ParallelLlamaBackend(demo_model, 16)
    job, first = run(backend, prompts)
    assert job.status is JobStatus.COMPLETED and all(r.success for r in first)
    assert backend.capacity == 16  # the KV cache fits in memory
    assert backend.timing.decodes == backend.timing.steps + 1  # and the shared prefix, once
    assert 0 < backend.timing.other_seconds < backend.timing.decode_seconds
    _, by_chain = run(ParallelLlamaBackend(demo_model, 16, greedy_argmax=False), prompts)
    _, again = run(ParallelLlamaBackend(demo_model, 16), prompts)
    for results in (by_chain, again):
        assert [r.response_text for r in results] == [r.response_text for r in first]
        assert [r.tokens_output for r in results] == [r.tokens_output for r in first]
    # Full batches round differently (and use flash attention), so answers may part from
    # the one-at-a-time ones; a row of logits read for the wrong slot would part them all.
    _, sequential = run(LlamaCppBackend(demo_model), prompts)
    assert any(p.response_text == s.response_text for p, s in zip(first, sequential, strict=True))


def test_sampled_slots_beside_greedy_ones_follow_their_seeds(demo_model):
    prompts = [
        Prompt("Name a colour.", options={"temperature": 0.8, "seed": 7}),
        Prompt("What is a stack?"),
        Prompt("Name a colour.", options={"temperature": 0.8, "seed": 7}),
        Prompt("What is a queue?"),
    ]
    _, first = run(ParallelLlamaBackend(demo_model, 4), prompts)
    _, again = run(ParallelLlamaBackend(demo_model, 4), prompts)
    assert [r.response_text for r in first] == [r.response_text for r in again]
    assert all(r.success and r.tokens_output > 0 for r in first)


@pytest.mark.parametrize("settings", [SETTINGS, INVARIANT], ids=["full", "invariant"])
def test_stop_strings_system_prompts_and_too_long_prompts(demo_model, settings):
    settings = replace(
        settings,
        max_tokens=48,
        n_ctx=256,
        stop=["."],
        system_prompt="Answer in one short sentence.",
    )
    prompts = ["What is a stack?", "Summarise: " + "lorem ipsum " * 200, "What is a queue?"]
    _, sequential = run(LlamaCppBackend(demo_model), prompts, settings)
    _, parallel = run(ParallelLlamaBackend(demo_model, 4), prompts, settings)
    assert [r.success for r in parallel] == [True, False, True]
    assert "but the context holds 256" in parallel[1].error_message
    assert all("." not in r.response_text for r in parallel)
    assert [r.finish_reason for r in parallel] == [r.finish_reason for r in sequential]
    if settings.batch_invariant:
        assert [r.response_text for r in parallel] == [r.response_text for r in sequential]


def test_a_shared_prefix_longer_than_a_batch(demo_model):
    """A system prompt over N_BATCH tokens is decoded into the shared sequence in parts."""
    system = "You answer questions about computing. " * 100  # about 600 tokens
    settings = replace(INVARIANT, max_tokens=12, n_ctx=1024, system_prompt=system)
    prompts = ["What is a stack?", "What is a queue?", "What is a heap?"]
    backend = ParallelLlamaBackend(demo_model, 3)
    _, parallel = run(backend, prompts, settings)
    assert len(backend._prefix) > N_BATCH
    _, sequential = run(LlamaCppBackend(demo_model), prompts, settings)
    assert [r.response_text for r in parallel] == [r.response_text for r in sequential]


def test_cancel_takes_effect_within_one_decode_step(demo_model):
    settings = GenerationSettings(max_tokens=200, temperature=0.0, n_ctx=512, n_threads=1)
    cancel = threading.Event()
    seen: list[int] = []

    def on_event(event):
        if isinstance(event, events.TokensStreamed):
            seen.append(event.index)
            if len(seen) == 12:
                cancel.set()

    prompts = ["Write a long story about a dragon."] * 6
    job, results = run(
        ParallelLlamaBackend(demo_model, 4),
        prompts,
        settings,
        cancel_event=cancel,
        on_event=on_event,
    )
    assert results == [] and job.status is JobStatus.CANCELLED
    assert len(seen) <= 12 + 4  # at most the rest of the step that saw the cancel


def test_kill_and_resume_with_parallel_answers_every_prompt_once(tmp_path):
    job, saved, _ = kill_then_resume(tmp_path, 6, "--parallel", "4", "--batch-invariant")
    assert job.settings.parallel == 4 and job.settings.batch_invariant
    assert 4 <= len(saved) < 25


def test_a_prompt_starts_after_what_it_shares_with_one_already_decoded(demo_model):
    """Prompts of a template share its text: a prompt admitted to a slot starts after the
    tokens it has in common with a prompt whose KV cells are there (its slot's last, or
    a running one's, copied), so most of a prompt is never decoded twice."""
    instruction = (
        "You are labelling product reviews for a shop. Read the review below and say in "
        "a few words whether the customer liked the product, and why. Review of a kettle: "
    )
    prompts = [f"{instruction}it is number {n} and it {verb}." for n, verb in
               enumerate(["boils", "leaks", "hums", "shines"] * 8)]  # fmt: skip
    settings = replace(SETTINGS, max_tokens=8)
    backend = ParallelLlamaBackend(demo_model, 8)
    _, first = run(backend, prompts, settings)
    prompt_tokens = sum(r.tokens_input for r in first)
    prefilled = backend.timing.tokens - sum(r.tokens_output for r in first)
    assert prefilled < 0.5 * prompt_tokens  # measured: 29%
    assert all(r.success and r.tokens_output > 0 for r in first)
    _, again = run(ParallelLlamaBackend(demo_model, 8), prompts, settings)
    assert [r.response_text for r in again] == [r.response_text for r in first]


def test_greedy_tokens_chosen_on_the_device_are_the_hosts(demo_model, monkeypatch):
    """The GPU experiment (`device_greedy`), run here on the CPU, where llama.cpp's backend
    sampling works too: a plain greedy prompt's token is chosen in the decode's graph,
    a sampled one's by its chain from the rows of logits that still come back."""
    from tui_batch.backends.llama import parallel

    prompts = load_prompt_file(EXAMPLES / "batch_prompts.txt").prompts[:10]
    prompts[0] = Prompt(prompts[0].text, options={"temperature": 0.8, "seed": 3})
    settings = replace(SETTINGS, max_tokens=16)
    _, on_host = run(ParallelLlamaBackend(demo_model, 4), prompts, settings)
    monkeypatch.setattr(parallel, "wanted", lambda every_layer_on_gpu, batch_invariant: True)
    backend = ParallelLlamaBackend(demo_model, 4)
    chosen_where: list[bool] = []
    original = backend.submit

    def submit(task, run=None):
        original(task, run)
        seq_id = next(s for s, slot in backend._slots.items() if slot.task is task)
        chosen_where.append(backend.device_greedy.has(seq_id))

    backend.submit = submit
    _, on_device = run(backend, prompts, settings)
    assert chosen_where[0] is False and all(chosen_where[1:]), chosen_where
    # While the sampled prompt runs, every row of logits comes back and the device's
    # argmax over them is the host's; once it is done no row comes back, and the logits
    # are computed in another graph (on this model, to the same answers).
    for host, device in zip(on_host, on_device, strict=True):
        assert device.response_text == host.response_text, device.prompt_index
        assert device.tokens_output == host.tokens_output
    assert backend.device_greedy is None  # closed with the model


def test_the_device_chooses_only_where_asked_on_a_gpu(monkeypatch):
    from tui_batch.backends.llama.device_greedy import ENV, wanted

    monkeypatch.delenv(ENV, raising=False)
    assert not wanted(True, False)
    monkeypatch.setenv(ENV, "1")
    assert wanted(True, False)
    assert not wanted(False, False)  # on the CPU the graph's argmax is slower
    assert not wanted(True, True)  # batch-invariant answers: the host's argmax, as alone
