"""The llama.cpp backend on the real demo model."""

from __future__ import annotations

import threading

import pytest

from tui_batch.backends.llama.sequential import LlamaCppBackend
from tui_batch.core import events
from tui_batch.core.jobs import GenerationSettings, JobStatus, Prompt, build_messages
from tui_batch.core.processor import BatchProcessor

pytestmark = pytest.mark.model
SETTINGS = GenerationSettings(max_tokens=16, temperature=0.0, n_ctx=512, n_threads=1)


@pytest.fixture(scope="module")
def backend(demo_model):
    backend = LlamaCppBackend(demo_model)
    backend.open(SETTINGS)
    yield backend
    backend.close()


def test_answers_match_create_chat_completion_and_its_usage(backend, tmp_path):
    prompts = ["What is a stack?", "Name a prime number.", "Say hello."]
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("demo", prompts, settings=SETTINGS)
    streamed: dict[int, str] = {}

    def on_event(event):
        if isinstance(event, events.TokensStreamed):
            streamed[event.index] = streamed.get(event.index, "") + event.text

    results = processor.process_batch(job, backend, on_event=on_event)
    llama = backend._llama
    for result in results:
        expected = llama.create_chat_completion(
            messages=[{"role": "user", "content": result.prompt}],
            max_tokens=16,
            temperature=0.0,
            top_p=SETTINGS.top_p,
        )
        assert result.response_text == expected["choices"][0]["message"]["content"]
        assert result.tokens_input == expected["usage"]["prompt_tokens"]
        assert result.tokens_output == expected["usage"]["completion_tokens"]
        assert result.finish_reason == expected["choices"][0]["finish_reason"]
        assert streamed[result.prompt_index] == result.response_text


def test_prompt_longer_than_the_context_is_a_failed_result(backend, tmp_path):
    processor = BatchProcessor(tmp_path)
    long_prompt = "Please summarise this: " + "lorem ipsum dolor " * 300
    job = processor.create_job(
        "demo",
        ["Say yes.", long_prompt, "Say no."],
        settings=SETTINGS,
        retries=2,
        retry_backoff=0.0,
    )
    results = processor.process_batch(job, backend)
    assert [r.success for r in results] == [True, False, True]
    assert results[1].attempts == 1  # retrying cannot make it fit
    assert "but the context holds 512" in results[1].error_message
    assert results[1].error_message.startswith("Prompt is ")
    assert job.status is JobStatus.COMPLETED


def test_cancel_takes_effect_mid_generation(backend, tmp_path):
    processor = BatchProcessor(tmp_path)
    settings = GenerationSettings(max_tokens=200, temperature=0.0, n_ctx=512, n_threads=1)
    job = processor.create_job(
        "demo", ["Write a long story about a dragon."] * 2, settings=settings
    )
    cancel = threading.Event()
    tokens: list[str] = []

    def on_event(event):
        if isinstance(event, events.TokensStreamed):
            tokens.append(event.text)
            if len(tokens) == 5:
                cancel.set()

    results = processor.process_batch(job, backend, cancel_event=cancel, on_event=on_event)
    assert results == [] and job.status is JobStatus.CANCELLED
    assert len(tokens) == 5  # stopped after the step that set the event, not at the prompt's end
    resumed = processor.process_batch(processor.load_checkpoint(job.checkpoint_file)[0], backend)
    assert len(resumed) == 2


def test_system_prompts_per_prompt_win_over_the_job_one():
    assert build_messages(Prompt("q"), "job") == [
        {"role": "system", "content": "job"},
        {"role": "user", "content": "q"},
    ]
    assert build_messages(Prompt("q", system="own"), "job")[0]["content"] == "own"
    chat = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "q"},
    ]
    assert build_messages(Prompt("q", messages=chat), None) == chat
    assert 1 <= GenerationSettings().effective_threads <= 8


def test_a_file_that_is_not_a_model_is_a_model_error(tmp_path):
    from tui_batch.core.errors import ModelError

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="Cannot load model"):
        LlamaCppBackend(bad).open(SETTINGS)
