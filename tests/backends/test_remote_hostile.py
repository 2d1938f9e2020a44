"""A misbehaving or hostile server: answers that are not whole, odd counts and texts,
keys echoed back, redirects to another host, escape sequences in model names. Each
answer fails (or is cleaned) alone; the job and the user's key and terminal are safe."""

from __future__ import annotations

import json

import pytest

from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor

from conftest import run_cli
from support.fake_server import FakeServer
from support.remote import run, settings

KEY = "sk-test-0123456789abcdefghijklmnop"
WHOLE = "w0 w1 w2 w3 w4 w5 w6 w7"


def pieces_of(secret: str, size: int = 8) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


@pytest.mark.parametrize("fault", ["nofinish", "cut", "jsonbody", "nochoices"])
def test_a_200_that_holds_no_whole_answer_is_retried_then_failed(tmp_path, fault):
    with FakeServer() as fake:
        fake.script.extend([fault, "ok"])  # dropped once, then answered
        _, results, _ = run(tmp_path, settings(fake.url, concurrency=1), 1, retries=2)
    (result,) = results
    assert result.success and result.response_text == WHOLE and result.attempts == 2
    assert result.attempt_log[0].error.startswith("incomplete answer: ")
    with FakeServer() as fake:
        fake.script.extend([fault] * 3)  # never whole: failed with the reason, not ""
        job, results, _ = run(tmp_path, settings(fake.url, concurrency=1), 1, retries=2)
    (failed,) = results
    assert not failed.success and failed.attempts == 3 and failed.response_text == ""
    assert failed.error_message.startswith("incomplete answer: ")
    assert job.status is JobStatus.COMPLETED and (job.completed, job.failed) == (0, 1)


def test_a_count_of_2_64_and_a_lone_surrogate_fail_or_clean_one_answer_alone(tmp_path):
    with FakeServer() as fake:
        fake.script.extend(["hugeusage"] * 2)
        job, results, _ = run(tmp_path, settings(fake.url, concurrency=1), 1, retries=1)
    (huge,) = results
    assert not huge.success and "usage has wrong counts" in huge.error_message
    assert job.status is JobStatus.COMPLETED
    with FakeServer() as fake:
        fake.script.append("surrogate")
        job, results, _ = run(tmp_path, settings(fake.url, concurrency=1), 2, retries=0)
    odd, fine = results
    assert odd.success and odd.response_text == "w0 \ufffd w2 w3 w4 w5 w6 w7"
    assert fine.success and job.status is JobStatus.COMPLETED
    # The checkpoint holds them, and every run of the job reads and exports it.
    loaded, saved = BatchProcessor(tmp_path / "checkpoints").load_job(job.job_id)
    assert [r.response_text for r in saved] == [r.response_text for r in results]
    out = BatchProcessor(tmp_path / "checkpoints").export_results(loaded, saved, tmp_path / "o.csv")
    assert "\ufffd" in out.read_text(encoding="utf-8")


def test_a_key_echoed_near_the_cut_of_an_error_is_scrubbed_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeServer() as fake:
        fake.script.append("echo")
        job, results, _ = run(tmp_path, settings(fake.url), 1, retries=0)
    (result,) = results
    assert result.error_message.endswith(" key $OPEN")  # scrubbed, then cut
    checkpoint = (tmp_path / "checkpoints" / f"batch_{job.job_id}.db").read_bytes()
    for piece in pieces_of(KEY):
        assert piece not in result.error_message
        assert piece.encode() not in checkpoint


def test_a_redirect_to_another_host_is_not_followed(tmp_path):
    with FakeServer() as elsewhere, FakeServer() as fake:
        fake.script.append(f"redirect:{elsewhere.url}/chat/completions")
        _, results, _ = run(tmp_path, settings(fake.url), 2, retries=3)
        assert elsewhere.arrivals == []  # never asked: answers come only from named hosts
    refused, answered = results
    assert not refused.success and refused.attempts == 1  # not retried: it would not help
    assert "HTTP 307: redirected to http://127.0.0.1, another host: not followed" in (
        refused.error_message
    )
    assert answered.success


def test_a_server_redirecting_its_model_list_elsewhere_is_one_line(tmp_path):
    (tmp_path / "p.txt").write_text("hello\n")
    with FakeServer() as elsewhere, FakeServer() as fake:
        fake.models_redirect = f"{elsewhere.url}/models"
        for args in (["run", str(tmp_path / "p.txt")], ["models"]):
            done = run_cli(*args, "--server", fake.url)
            assert done.returncode == 2, done.stderr
            assert done.stderr.strip().splitlines() == [
                f"tui-batch: error: {fake.url}/models: HTTP 307: redirected to "
                "http://127.0.0.1, another host: not followed"
            ]
        assert elsewhere.arrivals == []


def test_a_model_name_holding_the_key_or_escapes_never_reaches_a_file_or_the_terminal(tmp_path):
    hostile = f"gpt-{KEY}\x1b]0;owned\x07\x1b[2J"
    env = {"OPENAI_API_KEY": KEY}
    with FakeServer(model=hostile) as fake:
        listed = run_cli("models", "--server", fake.url, env=env)
        listed_json = run_cli("models", "--server", fake.url, "--json", env=env)
        ran = run_cli("run", str(tmp_path / "p.txt"), "--server", fake.url, env=env)
        (tmp_path / "p.txt").write_text("hello\n")
        ran = run_cli("run", str(tmp_path / "p.txt"), "--server", fake.url, env=env)
    for done in (listed, listed_json, ran):
        for piece in pieces_of(KEY):
            assert piece not in done.stdout + done.stderr
        assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout
    assert listed.returncode == 0 and "gpt-$OPENAI_API_KEY\\x1b]0;owned\\x07" in listed.stdout
    assert json.loads(listed_json.stdout)[0]["models"][0].startswith("gpt-$OPENAI_API_KEY")
    assert ran.returncode == 2 and "holds the API key" in ran.stderr
    assert BatchProcessor().job_summaries() == []  # no job made, nothing stored
