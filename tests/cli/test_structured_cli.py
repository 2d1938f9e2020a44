"""Structured answers through `tui-batch` in real subprocesses: every mistake in a schema is
one line before a model loads; on the real demo model every answer is valid, exported a
column a field, counted in stats, kept across kill -9 and resume; invalid answers from a
server that ignores schemas are results of their own, run again only with --retry-failed."""

from __future__ import annotations

import csv
import json
import time

import pytest
from cli.test_template_cli import only_job, reviews

from tui_batch.core.processor import BatchProcessor
from tui_batch.core.structured.check import check_answer

from conftest import run_cli
from support.cli import kill_then_resume
from support.fake_server import FakeServer

REVIEW = "sentiment: positive|negative|neutral, stars: int 1..5, headline: str ..60"
TEMPLATE = "Review of a {{ product }}: {{ review }}"


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--schema", "stars: integr"], "field 'stars': unknown type 'integr'"),
        (["--schema", '{"type": "object", "not": {}}'], "'not' at $ cannot be enforced"),
        (["--schema", '{"type": "object",'], "Schema: not valid JSON"),
        (["--schema", "nowhere.json"], "Schema: no such file nowhere.json"),
        (["--choices", "yes"], "Choices: give at least two labels"),
        (["--schema", "a: int", "--choices", "x,y"], "not allowed with argument --schema"),
    ],
)
def test_a_mistake_in_a_schema_is_one_line_before_anything_runs(tmp_path, flags, said):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    started = time.monotonic()
    done = run_cli("run", str(prompts), *flags, "--model", str(tmp_path / "absent.gguf"))
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and "Job " not in done.stderr
    assert not BatchProcessor().job_summaries()
    assert time.monotonic() - started < 20  # no model was loaded


def test_mistakes_in_job_files_and_front_matter_name_the_line(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('[input]\nprompts = "p.txt"\n\n[generation]\nschema = "a: nope"\n')
    done = run_cli("run", str(job))
    assert done.returncode == 2
    assert "job.toml, line 5: generation.schema: Schema: field 'a': unknown type" in done.stderr
    template = tmp_path / "t.jinja"
    template.write_text('+++\nmax_tokens = 4\nchoices = ["only"]\n+++\n{{ review }}\n')
    done = run_cli("run", "--template", str(template), "--data", str(reviews(tmp_path, 2)))
    assert done.returncode == 2
    assert "t.jinja, line 3: Choices: give at least two labels" in done.stderr


@pytest.mark.model
def test_every_answer_valid_exported_a_column_a_field_and_counted(tmp_path):
    out = tmp_path / "labels.csv"
    done = run_cli(
        "run", "--template-text", TEMPLATE, "--data", str(reviews(tmp_path, 12)),
        "--id-field", "id", "--schema", REVIEW, "--max-tokens", "96", "--threads", "1",
        "--out", str(out), "--price-in", "0.1", "--price-out", "0.2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Answers: " + REVIEW in done.stderr
    assert "enforced while decoding (llguidance)" in done.stderr
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-4:] == ["invalid", "sentiment", "stars", "headline"]
    for row in rows:
        assert row["success"] == "True" and row["invalid"] == "False"
        answer = json.loads(row["response"])
        assert (row["sentiment"], int(row["stars"]), row["headline"]) == (
            answer["sentiment"],
            answer["stars"],
            answer["headline"],
        )
    job, results = only_job()
    assert job.settings.schema is not None and job.settings.schema.source == REVIEW
    figures = json.loads(run_cli("stats", job.job_id, "--json").stdout)
    assert (figures["valid"], figures["invalid"], figures["schema"]) == (12, 0, REVIEW)
    labels = figures["labels"]["sentiment"]
    assert list(labels) == ["positive", "negative", "neutral"] and sum(labels.values()) == 12
    text = run_cli("stats", job.job_id).stdout
    assert "12 valid, 0 invalid (100.0% valid)" in text and "sentiment (valid answers)" in text
    exported = tmp_path / "again.json"
    assert run_cli("export", job.job_id, "--out", str(exported)).returncode == 0
    document = json.loads(exported.read_text())
    assert [r["output"] for r in document["results"]] == [r.output for r in results]


@pytest.mark.model
def test_a_templates_choices_label_every_answer(tmp_path):
    template = tmp_path / "label.jinja"
    template.write_text(
        '+++\nmax_tokens = 8\nchoices = ["positive", "negative", "neutral"]\n+++\n'
        "Is this review positive, negative or neutral? {{ review }}\n"
    )
    out = tmp_path / "labels.csv"
    done = run_cli(
        "run", "--template", str(template), "--data", str(reviews(tmp_path, 6)),
        "--threads", "1", "--out", str(out), "--parallel", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["response"] == r["label"] for r in rows)
    assert {r["label"] for r in rows} <= {"positive", "negative", "neutral"}


@pytest.mark.model
def test_kill_9_and_resume_keep_the_schema(tmp_path):
    schema = "answer: str ..80, confident: bool"
    job, saved, _ = kill_then_resume(tmp_path, 6, "--schema", schema, "--max-tokens", "48")
    assert job.settings.schema is not None
    job, results = BatchProcessor().load_job(job.job_id)
    assert job.settings.schema.source == schema and len(results) == 25
    for result in results:
        if result.success:
            assert (
                result.output
                == check_answer(job.settings.schema, result.response_text, "stop").value
            )
        else:
            assert result.invalid and result.error_message  # cut off at 48 tokens, say


def test_invalid_answers_are_run_again_only_with_retry_failed(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("first\nsecond\nthird\n")
    with FakeServer() as fake:
        fake.reply = "A cat, I would say."
        done = run_cli(
            "run", str(prompts), "--server", fake.url, "--schema", "animal: cat|dog",
            "--invalid-retries", "1", "--out", str(tmp_path / "out.json"),
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "does not enforce the schema" in done.stderr
        assert "3 invalid" in done.stderr
        job, results = only_job()
        assert all(r.invalid and r.attempts == 2 for r in results)
        asked = len(fake.bodies)
        assert asked == 3 + 3 * 2  # one probe (three forms) for the check and the run

        again = run_cli("resume", job.job_id)
        assert "Nothing to run" in again.stderr and len(fake.bodies) == asked
        fake.reply = '{"animal": "dog"}'
        again = run_cli("resume", job.job_id, "--retry-failed")
        assert again.returncode == 0, again.stderr
    job, results = only_job()
    assert [r.output for r in results] == [{"animal": "dog"}] * 3
    figures = json.loads(run_cli("stats", job.job_id, "--json").stdout)
    assert (figures["valid"], figures["invalid"]) == (3, 0)
