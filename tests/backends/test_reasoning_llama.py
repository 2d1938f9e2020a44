"""Thinking models in-process: how a model thinks is found from its chat template (real
templates of the llama-cpp-python sdist, both switch values), and a model that thinks
(the demo model with `<think>` tokens and a Qwen-style template: `support.thinking_model`)
runs through both real decode loops with its thought kept apart, budgeted, closed before
the answer, and a schema applied to the answer only."""

from __future__ import annotations

import pytest

from tui_batch.backends.factory import llama_backend
from tui_batch.backends.llama.parallel import ParallelLlamaBackend
from tui_batch.backends.llama.sequential import LlamaCppBackend
from tui_batch.backends.llama.thinking import find_thinking
from tui_batch.core.jobs import GenerationSettings
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT
from tui_batch.core.structured.schema import parse_schema

from support.thinking_model import make_thinking_model, real_template

PROMPTS = [
    "What is 2+2?",
    "Write a story about a cat.",
    "Name three colours.",
    "Why is the sky blue?",
]


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory):
    """The demo model whose prompt opens a thought (as Qwen3.5's and R1's do)."""
    return make_thinking_model(tmp_path_factory.mktemp("models"), opens=True)


# name: opening, closing (stripped), switched, thinks by default, prompt opens it when on
TEMPLATES = {
    "Qwen-Qwen3-0.6B.jinja": ("<think>", "</think>", True, True, False),
    "Qwen3.5-4B.jinja": ("<think>", "</think>", True, True, True),
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": ("<think>", "</think>", False, True, True),
    "openai-gpt-oss-120b.jinja": (
        "<|channel|>analysis<|message|>",
        "<|end|><|start|>assistant<|channel|>final<|message|>",
        False,
        True,
        False,
    ),
    "HuggingFaceTB-SmolLM3-3B.jinja": ("<think>", "</think>", True, True, False),
    "google-gemma-4-31B-it.jinja": ("<|channel>thought", "<channel|>", True, False, False),
}


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_how_a_model_thinks_is_found_from_its_template(name):
    start, end, switch, default_on, opened_on = TEMPLATES[name]
    found = find_thinking(real_template(name), "</s>", "<s>")
    assert found is not None
    assert (found.start, found.end.strip()) == (start, end)
    assert (found.switch, found.default_on, found.opened_on) == (switch, default_on, opened_on)
    if switch:
        assert not found.opened_off  # switched off, the prompt never opens a thought
        on, off = GenerationSettings(reasoning="on"), GenerationSettings(reasoning="off")
        assert found.thinks(on) and not found.thinks(off)


@pytest.mark.parametrize(
    "name", ["meta-llama-Llama-3.1-8B-Instruct.jinja", "google-gemma-2-2b-it.jinja"]
)
def test_models_that_do_not_think_are_told_apart(name):
    assert find_thinking(real_template(name), "</s>", "<s>") is None


def test_the_demo_models_template_does_not_think(demo_model):
    from tui_batch.backends.llama.tokens import LengthCheck

    check = LengthCheck(demo_model, 2048)
    check.tokens([])  # loads the vocabulary
    from tui_batch.backends.llama import tokens

    assert tokens._loaded is not None and tokens._loaded[2].thinking is None


def loop(model, parallel: int):
    """The decode loop a job of `--parallel N` runs on (0: llama-cpp-python's own)."""
    return llama_backend(model, GenerationSettings(parallel=parallel))


def run(tmp_path, model, backend, **settings):
    chosen = GenerationSettings(n_threads=1, **settings)
    processor = BatchProcessor(tmp_path / "checkpoints")
    job = processor.create_job("thinking", PROMPTS, settings=chosen)
    with backend:
        processor.process_batch(job, backend)
    return processor.load_job(job.job_id)


@pytest.mark.model
@pytest.mark.parametrize("parallel", [4, 0])
def test_a_budget_closes_every_thought_and_an_answer_follows(tmp_path, thinking_model, parallel):
    backend = loop(thinking_model, parallel)
    job, results = run(tmp_path, thinking_model, backend, max_tokens=64, reasoning_budget=16)
    assert job.completed == len(PROMPTS)
    for result in results:
        assert result.success and result.response_text.strip()
        assert result.reasoning and result.reasoning_tokens == 16  # it would have gone on
        # The thought is neither in the answer nor its markers anywhere.
        assert result.reasoning not in result.response_text
        assert "<think>" not in result.response_text + result.reasoning
        assert result.tokens_output > 16


@pytest.mark.model
def test_both_loops_think_the_same_under_batch_invariant_decoding(tmp_path, thinking_model):
    chosen = {"max_tokens": 48, "reasoning_budget": 12, "batch_invariant": True}
    _, parallel = run(
        tmp_path / "a", thinking_model, ParallelLlamaBackend(thinking_model, 4), **chosen
    )
    _, alone = run(tmp_path / "b", thinking_model, LlamaCppBackend(thinking_model), **chosen)
    seen = [(r.reasoning, r.response_text, r.reasoning_tokens) for r in parallel]
    assert seen == [(r.reasoning, r.response_text, r.reasoning_tokens) for r in alone]


@pytest.mark.model
@pytest.mark.parametrize("parallel", [4, 0])
def test_a_schema_applies_to_the_answer_after_a_bounded_thought(tmp_path, thinking_model, parallel):
    backend = loop(thinking_model, parallel)
    schema = parse_schema("answer: int, sure: bool")
    _, results = run(
        tmp_path, thinking_model, backend, max_tokens=80, reasoning_budget=16, schema=schema
    )
    assert all(r.success and not r.invalid for r in results)
    assert all(set(r.output) == {"answer", "sure"} for r in results)
    assert all(r.reasoning and r.reasoning_tokens == 16 for r in results)


@pytest.mark.model
def test_a_thought_cut_by_max_tokens_is_never_an_answer(tmp_path, thinking_model):
    _, results = run(
        tmp_path, thinking_model, ParallelLlamaBackend(thinking_model, 4), max_tokens=12
    )
    for result in results:
        assert not result.success and result.error_message == INCOMPLETE_THOUGHT
        assert result.thought_cut and result.reasoning and result.response_text == ""
        assert result.finish_reason == "length"


@pytest.mark.model
@pytest.mark.parametrize("parallel", [4, 0])
def test_reasoning_off_renders_the_switch_and_answers_without_a_thought(
    tmp_path, thinking_model, parallel
):
    backend = loop(thinking_model, parallel)
    _, results = run(tmp_path, thinking_model, backend, max_tokens=24, reasoning="off")
    assert all(r.success and r.reasoning is None for r in results)
    assert any(r.response_text.strip() for r in results)  # (the small model may say nothing)


@pytest.fixture(scope="module")
def channels_model(tmp_path_factory):
    """The demo model thinking in gpt-oss-style channels of control tokens."""
    return make_thinking_model(tmp_path_factory.mktemp("models"), channels=True)


@pytest.mark.model
@pytest.mark.parametrize("parallel", [4, 0])
def test_channels_of_control_tokens_are_followed_by_token_ids(tmp_path, channels_model, parallel):
    """gpt-oss's way: the markers are control tokens, nothing in detokenized text."""
    model = channels_model
    backend = loop(model, parallel)
    _, results = run(tmp_path, model, backend, max_tokens=48, reasoning_budget=12)
    for result in results:
        assert result.success and result.response_text.strip()
        assert result.reasoning and result.reasoning_tokens == 12
        # The close (6 tokens: <|end|><|start|>assistant<|channel|>final<|message|>) came
        # between them, and neither shows a marker.
        assert result.tokens_output > 12 + 6
        assert "<|" not in result.response_text + result.reasoning
