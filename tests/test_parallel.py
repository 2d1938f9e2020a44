"""Continuous batching on the real demo model: same answers, once each, stoppable."""

from __future__ import annotations

import threading

import pytest
from test_cli import kill_then_resume

from tui_batch.backends.llama_cpp import LlamaCppBackend
from tui_batch.backends.llama_parallel import ParallelLlamaBackend
from tui_batch.core import events
from tui_batch.core.jobs import GenerationSettings, JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompts import load_prompt_file

from conftest import EXAMPLES

pytestmark = pytest.mark.model
SETTINGS = GenerationSettings(max_tokens=32, temperature=0.0, n_ctx=1024, n_threads=1)


def run(backend, prompts, settings=SETTINGS, **kwargs):
    processor = BatchProcessor()
    job = processor.create_job("demo", prompts, settings=settings)
    backend.open(settings)
    try:
        return job, processor.process_batch(job, backend, **kwargs)
    finally:
        backend.close()


def test_parallel_answers_equal_the_sequential_ones(demo_model):
    prompts = load_prompt_file(EXAMPLES / "batch_prompts.txt").prompts
    _, sequential = run(LlamaCppBackend(demo_model), prompts)
    streamed: dict[int, str] = {}

    def on_event(event):
        if isinstance(event, events.TokensStreamed):
            streamed[event.index] = streamed.get(event.index, "") + event.text

    job, parallel = run(ParallelLlamaBackend(demo_model, 16), prompts, on_event=on_event)
    assert job.status is JobStatus.COMPLETED
    for seq, par in zip(sequential, parallel, strict=True):
        assert par.response_text == seq.response_text, par.prompt_index
        assert (par.tokens_input, par.tokens_output) == (seq.tokens_input, seq.tokens_output)
        assert par.finish_reason == seq.finish_reason
        assert streamed[par.prompt_index] == par.response_text


def test_stop_strings_system_prompts_and_too_long_prompts(demo_model):
    settings = GenerationSettings(
        max_tokens=48,
        temperature=0.0,
        n_ctx=256,
        n_threads=1,
        stop=["."],
        system_prompt="Answer in one short sentence.",
    )
    prompts = ["What is a stack?", "Summarise: " + "lorem ipsum " * 200, "What is a queue?"]
    _, sequential = run(LlamaCppBackend(demo_model), prompts, settings)
    _, parallel = run(
        ParallelLlamaBackend(demo_model, 4),
        prompts,
        settings,
    )
    assert [r.success for r in parallel] == [True, False, True]
    assert "but the context holds 256" in parallel[1].error_message
    assert [r.response_text for r in parallel] == [r.response_text for r in sequential]
    assert all("." not in r.response_text for r in parallel)


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
    job, saved, _ = kill_then_resume(tmp_path, 6, "--parallel", "4")
    assert job.settings.parallel == 4 and 4 <= len(saved) < 25
