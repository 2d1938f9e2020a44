"""A schema on servers, against our fault-injecting server (which never enforces one): the
probe finds it fails open, answers are checked, invalid ones run again with a new seed and
kept, the last invalid one is a result of its own that the error strategy counts."""

from __future__ import annotations

import json

from tui_batch.backends.remote.backend import RemoteBackend
from tui_batch.core.jobs import GenerationSettings, JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.structured.check import CUT_OFF
from tui_batch.core.structured.schema import parse_choices, parse_schema

from support.fake_server import FakeServer
from support.remote import settings

LABEL = parse_schema("label: cat|dog, size: int 1..3")
GOOD = '{"label": "cat", "size": 2}'


def run_schema(tmp_path, fake, prompts, schema=LABEL, **job):
    server = settings(fake.url)
    processor = BatchProcessor(tmp_path / "checkpoints")
    made = processor.create_job(
        "fake-model",
        prompts,
        server=server,
        settings=GenerationSettings(schema=schema, seed=7),
        retries=1,
        retry_backoff=0.01,
        **job,
    )
    backend = RemoteBackend(server, "fake-model")
    with backend:
        results = processor.process_batch(made, backend)
    return made, results, backend


def test_invalid_then_valid_answers_are_run_again_with_a_new_seed_and_kept(tmp_path):
    with FakeServer() as fake:
        fake.reply = GOOD
        fake.script.extend(["say:not json at all"] * 3)  # the probe's three forms
        fake.script.extend(["say:Sure! Here it is", 'say:{"label": "cat", "size": 9}'])
        job, results, backend = run_schema(tmp_path, fake, ["one"])
    assert backend.schema_forms == {fake.url: None}
    assert any("does not enforce the schema" in n for n in backend.status().changes)
    (result,) = results
    assert result.success and result.output == {"label": "cat", "size": 2}
    assert result.attempts == 3
    errors = [a.error for a in result.attempt_log]
    assert errors[0].startswith("invalid: $: not JSON")
    assert errors[1] == "invalid: $.size: 9 is greater than the maximum of 3"
    assert [a.answer for a in result.attempt_log[:2]] == [
        "Sure! Here it is",
        '{"label": "cat", "size": 9}',
    ]
    asked = fake.bodies[3:]
    assert all(b["response_format"]["type"] == "json_schema" for b in asked)
    assert asked[0]["response_format"]["json_schema"]["schema"] == LABEL.schema
    seeds = [(b["seed"], b["temperature"]) for b in asked]
    assert seeds[0] == (7, 0.0) and len(set(seeds)) == 3 and seeds[1][1] == 0.7
    assert "label: one of cat, dog" in asked[0]["messages"][0]["content"]


def test_a_fail_open_server_ends_in_invalid_results_the_error_strategy_counts(tmp_path):
    with FakeServer() as fake:
        fake.reply = "I think it is a cat."
        job, results, _ = run_schema(
            tmp_path, fake, ["a", "b", "c"], invalid_retries=1, error_strategy="stop"
        )
    assert job.status is JobStatus.FAILED and job.failed >= 1
    first = results[0]
    assert first.invalid and not first.success and first.attempts == 2
    assert first.error_message.startswith("$: not JSON")
    assert first.response_text == "I think it is a cat."


def test_cut_off_answers_say_so(tmp_path):
    with FakeServer() as fake:
        fake.script.extend(["say:x"] * 3 + ['cutoff:{"label": "ca'] * 3)
        job, results, _ = run_schema(tmp_path, fake, ["a"], invalid_retries=2)
    (result,) = results
    assert result.invalid and result.error_message == CUT_OFF and result.attempts == 3
    assert job.status is JobStatus.COMPLETED and job.failed == 1


def test_choices_on_a_server_come_back_as_the_label(tmp_path):
    with FakeServer() as fake:
        fake.reply = json.dumps("dog")  # an enum schema's answer: a JSON string
        _, results, _ = run_schema(tmp_path, fake, ["a", "b"], schema=parse_choices("cat,dog"))
        sent = fake.bodies[-1]["response_format"]["json_schema"]["schema"]
    assert [r.response_text for r in results] == ["dog", "dog"]
    assert [r.output for r in results] == ["dog", "dog"]
    assert sent == {"type": "string", "enum": ["cat", "dog"]}


def test_a_server_that_refuses_structured_output_is_sent_none(tmp_path):
    with FakeServer() as fake:
        fake.refuse_schemas = True
        fake.reply = GOOD
        _, results, backend = run_schema(tmp_path, fake, ["a", "b"])
        asked = fake.bodies[3:]
    assert backend.schema_forms == {fake.url: "refused"}
    assert all("response_format" not in body for body in asked) and len(asked) == 2
    assert [r.output for r in results] == [{"label": "cat", "size": 2}] * 2
