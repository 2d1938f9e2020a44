"""Templates and job files through `tui-batch` in real subprocesses, on the real demo
model: the example job, validation before anything runs, the job file round trip, and a
data file edited between a run and its resume."""

from __future__ import annotations

import csv
import json
import re
import signal
from pathlib import Path

import pytest

from tui_batch.core.processor import BatchProcessor

from conftest import EXAMPLES, run_cli
from support.cli import read_until_done, start_cli

FAST = ["--max-tokens", "6", "--threads", "1"]


def reviews(
    tmp_path: Path, count: int, name: str = "reviews.csv", expected: bool = False, first: int = 0
) -> Path:
    """`count` records of the example reviews from the `first`, as their own CSV (with the
    hand-written sentiment of the first 50 when `expected`)."""
    with (EXAMPLES / "reviews.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[first : first + count]
    path = tmp_path / name
    columns = ["id", "product", "review", *(["expected_sentiment"] if expected else [])]
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def only_job(exclude: set[str] = frozenset()):
    jobs = [s for s in BatchProcessor().job_summaries() if s.job_id not in exclude]
    assert len(jobs) == 1, jobs
    return BatchProcessor().load_job(jobs[0].job_id)


@pytest.mark.model
def test_the_example_job_file_runs_and_its_results_join_back_to_the_data(tmp_path):
    data = reviews(tmp_path, 6)
    with data.open("a", encoding="utf-8") as out:  # a record whose text looks like a template
        out.write('r999,mug,"It says {{ 7*7 }} and {% if x %}x{% endif %} on the box."\n')
    out = tmp_path / "headlines.csv"
    done = run_cli("run", str(EXAMPLES / "job.toml"), "--data", str(data), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # The id column once, as `id` (not again as `var_id`).
    assert list(rows[0])[:6] == ["index", "id", "prompt", "response", "var_product", "var_review"]
    assert [r["id"] for r in rows] == [f"r00{i}" for i in range(1, 7)] + ["r999"]
    assert all(r["success"] == "True" and r["response"].strip() for r in rows)
    last = rows[-1]
    assert last["var_review"] == "It says {{ 7*7 }} and {% if x %}x{% endif %} on the box."
    assert last["prompt"].endswith("Review: " + last["var_review"])  # never rendered twice
    job, results = only_job()
    assert job.template is not None and job.template.id_field == "id"
    assert job.template.template_file == str((EXAMPLES / "review_headline.jinja").resolve())
    assert all(r.tokens_output <= 16 for r in results)  # the front matter's max_tokens
    assert job.prompts[0].variables == {
        "id": "r001",
        "product": "kettle",
        "review": rows[0]["var_review"],
    }


def test_a_missing_variable_stops_before_anything_runs(tmp_path):
    data = tmp_path / "d.jsonl"
    lines = [{"title": "t", "body": "b"}] * 2 + [{"title": "t"}] * 8
    data.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    done = run_cli("run", "--template-text", "{{ title }}: {{ body }}", "--data", str(data))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == f"tui-batch: error: 8 of 10 records of {data} cannot be rendered:"
    assert lines[1:6] == [
        f"record {n}: no 'body' (the template uses it; the record has: title)" for n in range(3, 8)
    ]
    assert lines[6] == "... and 3 more"
    assert BatchProcessor().list_checkpoints() == []  # no job was made


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--template-text", "{{ a }}"], "a template needs --data FILE"),
        (["--data", "x.csv"], "--data fills a template: add --template FILE"),
        (["p.txt", "--template-text", "x", "--data", "d.csv"], "not both"),
        (["--template-text", "{{ a", "--data", "{data}"], "--template-text, line 1: unexpected"),
        (["--template-text", "{{ ''.__class__ }}", "--data", "{data}"], "not allowed"),
        (["--template-text", "{{ a|nope }}", "--data", "{data}"], "No filter named 'nope'"),
        (["--template-text", "{{ a }}", "--data", "{data}", "--id-field", "b"], "no id column"),
        (["--template", "missing.jinja", "--data", "{data}"], "Template file not found"),
        ([], "nothing to run"),
    ],
)
def test_bad_template_usage_is_one_line_and_exit_2(tmp_path, args, expected):
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    done = run_cli("run", *[a.replace("{data}", str(data)) for a in args], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    # One line; a record that cannot be rendered is listed under a line that counts them.
    assert len(done.stderr.strip().splitlines()) <= 2 and "Traceback" not in done.stderr


@pytest.mark.model
def test_save_job_then_run_it_makes_the_same_job_as_the_flags(tmp_path):
    data = reviews(tmp_path, 3)
    template = tmp_path / "t.jinja"
    template.write_text("+++\nmax_tokens = 5\n+++\nHeadline for: {{ review }}\n")
    flags = [
        "--template", str(template), "--data", str(data), "--id-field", "id",
        "--max-tokens", "7", "--temperature", "0.3", "--seed", "11", "--top-p", "0.9",
        "--stop", "\n", "--stop", "END", "--system", "Be brief.", "--n-ctx", "512",
        "--threads", "1", "--parallel", "2", "--batch-invariant", "--error-strategy",
        "threshold:3", "--retries", "1", "--retry-backoff", "0.5", "--checkpoint-every", "2",
        "--out", str(tmp_path / "out.jsonl"), "--format", "jsonl",
    ]  # fmt: skip
    job_file = tmp_path / "job.toml"
    saved = run_cli("run", *flags, "--save-job", str(job_file))
    assert saved.returncode == 0, saved.stderr
    assert f"Saved job file {job_file}" in saved.stderr
    assert BatchProcessor().list_checkpoints() == []  # saving runs nothing
    text = job_file.read_text()
    assert 'data = "reviews.csv"' in text  # relative to the job file's folder

    assert run_cli("run", *flags).returncode == 0
    first, _ = only_job()
    done = run_cli("run", str(job_file))
    assert done.returncode == 0, done.stderr
    second, _ = only_job(exclude={first.job_id})
    different = {"job_id", "checkpoint_file", "created_at", "updated_at", "started_at"}
    # The name: a job file names its job (the flags' job is named after its data file).
    different |= {"completed_at", "name"}
    one, two = first.header(), second.header()
    assert {k: v for k, v in one.items() if k not in different} == {
        k: v for k, v in two.items() if k not in different
    }
    assert first.prompts == second.prompts
    assert first.settings.seed == 11 and first.settings.stop == ["\n", "END"]


def test_a_saved_job_file_saves_back_as_itself_and_holds_what_was_given(tmp_path):
    data = reviews(tmp_path, 3)
    flags = [
        "--template-text", "Headline: {{ review }}", "--data", str(data), "--id-field", "id",
        "--max-tokens", "256", "--temperature", "0.3", "--stop", "END", "--seed", "",
        "--server", "http://127.0.0.1:9/v1#2", "--rpm", "60", "--no-stream",
        "--price-in", "0.5", "--price-out", "1.5", "--out", str(tmp_path / "out.jsonl"),
    ]  # fmt: skip
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    saved = run_cli("run", *flags, "--save-job", str(first))
    assert saved.returncode == 0, saved.stderr
    saved = run_cli("run", str(first), "--save-job", str(second))
    assert saved.returncode == 0, saved.stderr
    assert second.read_text() == first.read_text()
    text = first.read_text()
    assert "max_tokens = 256" in text  # given, though the default: kept
    assert "seed" not in text and "retries" not in text  # blank; the servers' default
    assert 'urls = ["http://127.0.0.1:9/v1#2"]' in text and "stream = false" in text
    # A flag on the command line lays itself over the file, and is saved with it.
    saved = run_cli("run", str(first), "--temperature", "0.9", "--save-job", str(second))
    assert saved.returncode == 0, saved.stderr
    assert second.read_text() == text.replace("temperature = 0.3", "temperature = 0.9")
    # A local model's setting in a job file on servers is one line, naming it both ways.
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[generation]", "[model]\nn_ctx = 512\n\n[generation]"))
    done = run_cli("run", str(bad), "--save-job", str(second))
    assert done.returncode == 2
    assert "Context size (--n-ctx) applies to local models only" in done.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[model]\nname = "x"\nthread = 2\n', "job.toml, line 3: model.thread: unknown key"),
        ("[generation]\nmax_tokens = 'many'\n", "line 2: generation.max_tokens: Max tokens: "),
        ("[generation]\ntemperature = -1\n", "line 2: generation.temperature: Temperature: must"),
        ("[output]\nformat = 'xml'\n", "line 2: output.format: expected one of json, csv"),
        ("[modle]\nname = 'x'\n", "job.toml, line 1: unknown table 'modle'"),
        ("[model\n", "job.toml, line 1: not valid TOML"),
        ("[server]\nurls = 5\n", "line 2: server.urls: expected a list of URLs, got 5"),
        ("[input]\nprompts = 'nope.txt'\n", "Prompts file not found"),
        ("[model]\nname = 'x'\n", "job.toml says nothing to run: give [input] prompts"),
    ],
)
def test_job_file_mistakes_name_the_key_and_the_line(tmp_path, content, expected):
    (tmp_path / "job.toml").write_text(content)
    done = run_cli("run", "job.toml", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.model
def test_a_data_file_edited_between_run_and_resume_stops_the_resume(tmp_path):
    data = reviews(tmp_path, 40)
    template = tmp_path / "t.jinja"
    template.write_text("Headline for this review: {{ review }}")
    out = tmp_path / "out.json"
    process = start_cli(
        "run", "--template", str(template), "--data", str(data), *FAST, "--parallel", "0",
        "--checkpoint-every", "1", "--out", str(out),
    )  # fmt: skip
    job_id, _ = read_until_done(process, 3)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with data.open("a", encoding="utf-8") as handle:
        handle.write("r500,kettle,A new review nobody asked for.\n")

    refused = run_cli("resume", job_id)
    assert refused.returncode == 2
    assert f"the data file {data.resolve()} changed since the job was made" in refused.stderr
    assert f"tui-batch resume {job_id} --force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    job, saved = BatchProcessor().load_job(job_id)
    assert len(saved) < 40  # nothing ran

    template.write_text("Something else: {{ review }}")
    refused = run_cli("resume", job_id)
    assert "the template file" in refused.stderr and "the data file" in refused.stderr

    forced = run_cli("resume", job_id, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "going on with the prompts stored in job" in forced.stderr
    results = json.loads(out.read_text())["results"]
    assert len(results) == 40  # the stored prompts: the new record is not among them
    assert all(r["prompt"].startswith("Headline for this review: ") for r in results)
    assert [r["id"] for r in results] == [str(n) for n in range(1, 41)]


@pytest.mark.model
def test_records_longer_than_the_context_are_warned_about_by_number(tmp_path):
    data = tmp_path / "d.json"
    long = "word " * 400
    data.write_text(json.dumps([{"text": "short"}, {"text": long}, {"text": "also short"}]))
    done = run_cli(
        "run", "--template-text", "Say: {{ text }}", "--data", str(data), "--n-ctx", "256",
        *FAST, "--out", str(tmp_path / "out.json"),
    )  # fmt: skip
    warning = f"tui-batch: warning: {data}: record 2: too long for the context ("
    assert warning in done.stderr and "the context holds 256): it will fail" in done.stderr
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [r["success"] for r in results] == [True, False, True]
    # Counted as the run counts it: the warning's tokens are the failure's.
    tokens = re.search(r"\((\d+) tokens with the chat template", done.stderr).group(1)
    assert results[1]["error_message"].startswith(f"Prompt is {tokens} tokens")
    assert results[1]["var_text"] == long and results[1]["id"] == "2"
