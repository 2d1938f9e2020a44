"""A schema enforced while the real demo model decodes (llguidance masks on its logits):
every answer valid at every --parallel, batch-invariant answers identical to one at a
time with the schema on in both, choices as plain labels, and answers cut off at max
tokens run again, kept, and finally invalid."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tui_batch.backends.llama.parallel import ParallelLlamaBackend
from tui_batch.backends.llama.sequential import LlamaCppBackend
from tui_batch.core.jobs import GenerationSettings, JobStatus, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.structured.check import CUT_OFF, check_answer
from tui_batch.core.structured.schema import parse_choices, parse_schema
from tui_batch.core.templates.render import render_prompts
from tui_batch.core.templates.template import PromptTemplate

from conftest import EXAMPLES

pytestmark = pytest.mark.model
REVIEW = parse_schema("sentiment: positive|negative|neutral, stars: int 1..5, headline: str ..60")
SETTINGS = GenerationSettings(
    max_tokens=96, temperature=0.0, n_ctx=1024, n_threads=1, schema=REVIEW
)


def reviews(count: int) -> list[Prompt]:
    template = PromptTemplate("Review of a {{ product }}: {{ review }}")
    return render_prompts(template, EXAMPLES / "reviews.csv", id_field="id").prompts[:count]


def run(backend, prompts, settings=SETTINGS, **job):
    processor = BatchProcessor()
    made = processor.create_job("demo", prompts, settings=settings, **job)
    with backend:
        backend.open(settings)
        return made, processor.process_batch(made, backend), backend


def test_every_answer_valid_at_full_batches_and_with_sampling(demo_model):
    prompts = reviews(24)
    prompts[3] = replace(prompts[3], options={"temperature": 0.9, "seed": 5})
    job, results, backend = run(ParallelLlamaBackend(demo_model, 16), prompts)
    assert backend.schema_mode == "enforced while decoding (llguidance)"
    assert job.status is JobStatus.COMPLETED and job.failed == 0
    for result in results:
        assert result.success and not result.invalid, result.error_message
        assert check_answer(REVIEW, result.response_text, result.finish_reason).valid
        assert result.output == check_answer(REVIEW, result.response_text, "stop").value
        assert 1 <= result.output["stars"] <= 5 and len(result.output["headline"]) <= 60
        assert result.attempts == 1 and result.finish_reason == "stop"


def test_batch_invariant_with_the_schema_equals_one_at_a_time_with_it(demo_model):
    prompts = reviews(8)
    invariant = replace(SETTINGS, batch_invariant=True)
    _, sequential, one = run(LlamaCppBackend(demo_model), prompts, invariant)
    _, parallel, _ = run(ParallelLlamaBackend(demo_model, 4), prompts, invariant)
    assert one.schema_mode == "enforced while decoding (llguidance)"
    assert [r.response_text for r in parallel] == [r.response_text for r in sequential]
    assert all(r.success and r.output for r in sequential)


@pytest.mark.parametrize("parallel", [0, 8])
def test_choices_answer_one_label_as_plain_text(demo_model, parallel):
    labels = parse_choices("positive,negative,neutral")
    settings = replace(SETTINGS, schema=labels, max_tokens=8)
    backend = (
        ParallelLlamaBackend(demo_model, parallel) if parallel else LlamaCppBackend(demo_model)
    )
    _, results, _ = run(backend, reviews(10), settings)
    assert all(r.success and r.response_text in labels.choices for r in results)
    assert [r.output for r in results] == [r.response_text for r in results]


@pytest.mark.parametrize("parallel", [0, 4])
def test_an_answer_cut_off_is_run_again_kept_and_finally_invalid(demo_model, parallel):
    settings = replace(SETTINGS, max_tokens=6)
    backend = (
        ParallelLlamaBackend(demo_model, parallel) if parallel else LlamaCppBackend(demo_model)
    )
    job, results, _ = run(
        backend, reviews(2), settings, invalid_retries=2, error_strategy="continue"
    )
    assert job.status is JobStatus.COMPLETED and job.failed == 2
    for result in results:
        assert not result.success and result.invalid and result.error_message == CUT_OFF
        assert result.finish_reason == "length" and result.output is None
        assert result.attempts == 3
        assert [a.error for a in result.attempt_log] == [f"invalid: {CUT_OFF}"] * 2
        assert all(a.answer and a.answer.startswith("{") for a in result.attempt_log)


def test_a_vocabulary_llguidance_cannot_read_is_said_and_answers_are_still_checked(
    demo_model, monkeypatch
):
    from tui_batch.backends.llama import constraint
    from tui_batch.core import events

    def unreadable(self, *args):
        raise ValueError("token 17 is not UTF-8")

    monkeypatch.setattr(constraint.SchemaConstraint, "__init__", unreadable)
    said = []
    processor = BatchProcessor()
    settings = replace(SETTINGS, max_tokens=24)
    job = processor.create_job("demo", reviews(3), settings=settings, invalid_retries=0)
    with ParallelLlamaBackend(demo_model, 4) as backend:
        backend.open(settings)
        results = processor.process_batch(job, backend, on_event=said.append)
    (how,) = [event.how for event in said if isinstance(event, events.SchemaEnforced)]
    assert how == ("not enforced on this model (token 17 is not UTF-8): answers are checked only")
    for result in results:  # free text now: checked, and invalid where it is not JSON
        checked = check_answer(REVIEW, result.response_text, result.finish_reason)
        assert result.invalid == (not checked.valid)
