"""`tui-batch run/resume/models --server` in real subprocesses, against real servers:
two `python -m llama_cpp.server` with the demo model, and our fault server for keys."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui_batch.core.jobfile import load_job_file
from tui_batch.core.processor import BatchProcessor

from conftest import EXAMPLES, run_cli
from support.fake_server import FakeServer, free_port, start_llama_servers

PROMPTS = EXAMPLES / "batch_prompts.txt"
ALIAS = "smollm2"


@pytest.fixture(scope="module")
def llama_servers(demo_model: Path) -> Iterator[list[str]]:
    """Two real llama-cpp-python servers on loopback, one thread each."""
    started = start_llama_servers(str(demo_model), 2, ALIAS)
    try:
        yield [url for url, _ in started]
    finally:
        for _, process in started:
            process.kill()
            process.wait(10)


def results_in(checkpoint: Path) -> int:
    try:
        with sqlite3.connect(f"{checkpoint.as_uri()}?mode=ro", uri=True) as connection:
            return connection.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.model
def test_two_real_servers_kill_9_and_resume_run_every_prompt_once(llama_servers, data_dir):
    a, b = llama_servers
    command = [
        sys.executable,
        "-m",
        "tui_batch",
        "run",
        str(PROMPTS),
        "--server",
        a,
        "--server",
        b,
        "--model",
        ALIAS,
        "--max-tokens",
        "24",
        "--checkpoint-every",
        "1",
        "--concurrency",
        "4",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = data_dir / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        files = list(checkpoints.glob("batch_*.db"))
        if files and results_in(files[0]) >= 6:
            break
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    (checkpoint,) = checkpoints.glob("batch_*.db")
    saved = results_in(checkpoint)
    assert 6 <= saved < 25
    job_id = checkpoint.stem.removeprefix("batch_")

    done = run_cli("resume", job_id, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"({25 - saved} to run;" in done.stderr
    job, results = BatchProcessor().load_job(job_id)
    assert job.completed == 25 and job.failed == 0
    assert [r.prompt_index for r in results] == list(range(25))
    assert all(r.response_text.strip() for r in results)
    assert {r.endpoint for r in results} == {a, b}  # both servers did work
    assert job.server is not None and [e.url for e in job.server.endpoints] == [a, b]


@pytest.mark.model
def test_two_real_servers_enforce_a_schema_in_the_form_they_take(llama_servers, tmp_path):
    """llama-cpp-python's server ignores OpenAI's json_schema envelope and enforces its own
    json_object with a schema: the probe finds that form and the job sends it."""
    a, b = llama_servers
    data = tmp_path / "r.csv"
    data.write_text(
        "id,review\n" + "".join(f"r{i},Review number {i}: fine I suppose.\n" for i in range(8))
    )
    out = tmp_path / "out.json"
    done = run_cli(
        "run", "--template-text", "Label this review: {{ review }}", "--data", str(data),
        "--server", a, "--server", b, "--model", ALIAS, "--max-tokens", "40",
        "--schema", "mood: good|bad|meh, score: int 0..9", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{a}: schema sent as json_object" in done.stderr
    assert f"{b}: schema sent as json_object" in done.stderr
    assert "answers enforced by the servers (json_object)" in done.stderr
    results = json.loads(out.read_text())["results"]
    assert all(r["success"] and r["output"]["mood"] in ("good", "bad", "meh") for r in results)
    assert {r["endpoint"] for r in results} == {a, b}


def test_resume_reuses_the_endpoints_or_takes_new_ones(data_dir):
    with FakeServer() as first, FakeServer() as second:
        first.script.extend(["ok", "ok", "400"])  # the third answer stops the job
        stopped = run_cli(
            "run", str(PROMPTS), "--server", first.url, "--concurrency", "1",
            "--error-strategy", "stop",
        )  # fmt: skip
        assert stopped.returncode == 1 and "error strategy stopped the job" in stopped.stderr
        (checkpoint,) = (data_dir / "checkpoints").glob("batch_*.db")
        job_id = checkpoint.stem.removeprefix("batch_")
        _, before = BatchProcessor().load_job(job_id)
        kept = {r.prompt_index for r in before if r.success}
        assert 2 <= len(kept) < 25 and any(not r.success for r in before)
        moved = run_cli("resume", job_id, "--retry-failed", "--server", second.url)
        assert moved.returncode == 0, moved.stderr
    job, results = BatchProcessor().load_job(job_id)
    assert job.completed == 25 and [e.url for e in job.server.endpoints] == [second.url]
    for result in results:
        assert result.endpoint == (first.url if result.prompt_index in kept else second.url)
    assert len(second.arrivals) == 25 - len(kept)


def test_bad_input_is_one_line_and_exit_2_before_any_job(data_dir):
    with FakeServer(key="sk-right-000111") as fake:
        dead = f"http://127.0.0.1:{free_port()}/v1"
        cases = {
            "unreachable": (["--server", dead], {}, f"Cannot reach {dead}"),
            "model": (
                ["--server", fake.url, "--model", "gpt-nope"],
                {"OPENAI_API_KEY": "sk-right-000111"},
                f"Model 'gpt-nope' is not served by {fake.url}; it serves: fake-model",
            ),
            "401": (
                ["--server", fake.url, "--api-key-env", "MY_KEY"],
                {"MY_KEY": "sk-wrong-222333"},
                "the key in $MY_KEY was refused",
            ),
            "unset key": (
                ["--server", fake.url],
                {"OPENAI_API_KEY": ""},
                "$OPENAI_API_KEY is not set",
            ),
            "scheme": (
                ["--server", "127.0.0.1:8000"],
                {},
                "expected a URL starting with http:// or https://",
            ),
            "key as name": (
                ["--server", fake.url, "--api-key-env", "sk-wrong-222333"],
                {},
                "not the key itself",
            ),
            "local flag": (["--server", fake.url, "--threads", "2"], {}, "(--threads) applies"),
        }
        for name, (flags, env, message) in cases.items():
            done = run_cli("run", str(PROMPTS), *flags, env=env, timeout=60)
            assert done.returncode == 2, (name, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and message in lines[0], (name, done.stderr)
            assert "Traceback" not in done.stderr
            assert "sk-wrong-222333" not in done.stderr + done.stdout
    assert not list((data_dir / "checkpoints").glob("batch_*.db"))


def test_the_key_never_reaches_a_file_or_the_screen(data_dir, tmp_path):
    key = "sk-test-SECRET-4d9f2a"
    with FakeServer(key=key) as fake:

        def run_with_key(out: Path):
            return run_cli(
                "run", str(PROMPTS), "--server", fake.url, "--api-key-env", "TEST_KEY",
                "--out", str(out), env={"TEST_KEY": key},
            )  # fmt: skip

        out = tmp_path / "out.jsonl"
        done = run_with_key(out)
        assert done.returncode == 0, done.stderr
        # The server's key changes: it refuses ours and echoes it back in its message.
        fake.key = "sk-test-OTHER-000000"
        rotated = run_with_key(tmp_path / "rotated.json")
        listing = run_cli("checkpoints", "--json")
        models = run_cli(
            "models", "--server", fake.url, "--api-key-env", "TEST_KEY", env={"TEST_KEY": key}
        )
    assert rotated.returncode == 2 and "the key in $TEST_KEY was refused" in rotated.stderr
    assert models.returncode == 2
    screens = done.stdout + done.stderr + rotated.stderr + listing.stdout + models.stdout
    assert key not in screens
    files = [p for p in [*data_dir.rglob("*"), *tmp_path.rglob("*")] if p.is_file()]
    assert any(p.suffix == ".db" for p in files) and out in files
    for path in files:
        assert key.encode() not in path.read_bytes(), path
    (header,) = json.loads(listing.stdout)["checkpoints"]
    assert header["model_id"] == "fake-model"


def test_a_refused_key_mid_job_fails_prompts_with_the_variable_not_the_key(tmp_path, monkeypatch):
    from tui_batch.backends.remote.backend import RemoteBackend
    from tui_batch.core.servers import ServerSettings, parse_endpoint

    monkeypatch.setenv("ROTATED_KEY", "sk-old-77777777")
    with FakeServer(key="sk-new-88888888") as fake:
        server = ServerSettings((parse_endpoint(fake.url),), api_key_env="ROTATED_KEY")
        processor = BatchProcessor(tmp_path / "checkpoints")
        job = processor.create_job("fake-model", ["a", "b"], server=server, retries=3)
        with RemoteBackend(server, "fake-model") as backend:
            results = processor.process_batch(job, backend)
    assert job.failed == 2
    assert results[0].attempts == 1  # a refused key is not retried
    assert results[0].error_message == (
        f"HTTP 401 from {fake.url}: the key in $ROTATED_KEY was refused"
    )
    assert b"sk-old-77777777" not in Path(job.checkpoint_file).read_bytes()


@pytest.mark.model
def test_models_lists_what_a_server_serves(llama_servers, data_dir):
    a, b = llama_servers
    table = run_cli("models", "--server", a, "--server", b)
    listed = run_cli("models", "--server", a, "--json")
    assert table.returncode == 0, table.stderr
    assert all(f"{url}  {ALIAS}" in table.stdout for url in (a, b))
    assert json.loads(listed.stdout) == [
        {"server": a, "models": [ALIAS], "interrupts_requests": False}
    ]


def test_run_prints_each_change_of_a_servers_state(data_dir):
    with FakeServer(delay=0.1) as fake:
        fake.script.extend(["429:0.5"])
        done = run_cli("run", str(PROMPTS), "--server", fake.url, "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    assert f"tui-batch: {fake.url}: HTTP 429; limit 2, paused 0.5s" in done.stderr
    assert f"tui-batch: {fake.url}: limit grows to 3" in done.stderr


@pytest.mark.model
def test_a_job_file_runs_a_template_on_real_servers_and_saves_back_the_same(
    llama_servers, data_dir, tmp_path
):
    a, b = llama_servers
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"n": n, "topic": t}) for n, t in enumerate(["tea", "rain", "{{ x }}"])
        )
        + "\n"
    )
    job_file = tmp_path / "job.toml"
    job_file.write_text(
        "[input]\n"
        "template_text = '''\n+++\nmax_tokens = 6\n+++\nOne word about {{ topic }}.'''\n"
        'data = "rows.jsonl"\nid_field = "n"\n\n'
        f'[model]\nname = "{ALIAS}"\n\n'
        f'[server]\nurls = ["{a}#1", "{b}#1"]\napi_key_env = "NO_KEY_HERE"\nrpm = 600\n'
        "first_token_timeout = 60.0\nrequest_timeout = 120.0\nstream = false\n\n"
        '[output]\nfile = "out.csv"\n'
    )
    done = run_cli("run", str(job_file), "--retries", "2")
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["var_topic"]) for r in rows] == [
        ("0", "tea"),
        ("1", "rain"),
        ("2", "{{ x }}"),
    ]
    assert all(r["success"] == "True" and 0 < int(r["tokens_out"]) <= 6 for r in rows)
    (summary,) = BatchProcessor().job_summaries()
    job, _ = BatchProcessor().load_job(summary.job_id)
    assert [str(e) for e in job.server.endpoints] == [f"{a}#1", f"{b}#1"]
    assert (job.server.rpm, job.server.request_timeout, job.retries) == (600, 120.0, 2)
    assert job.server.stream is False  # whole answers: the server counts their tokens
    assert job.model_id == ALIAS and job.template.id_field == "n"

    again = tmp_path / "again.toml"
    saved = run_cli("run", str(job_file), "--retries", "2", "--save-job", str(again))
    assert saved.returncode == 0, saved.stderr
    assert "[server]" in again.read_text() and "retries = 2" in again.read_text()
    assert load_job_file(again) == {**load_job_file(job_file), "retries": 2}


@pytest.mark.model
def test_a_server_that_interrupts_requests_is_found_and_sent_one_at_a_time(
    tmp_path, data_dir, demo_model
):
    """llama-cpp-python's server, as started by default: a new request cuts off the
    answer streaming ([DONE], no finish reason). Those were once 24 of 25 empty answers
    recorded as successes; now the server is found out, warned about, and given one
    request at a time, and every answer is whole."""
    ((url, process),) = start_llama_servers(str(demo_model), 1, ALIAS, interrupt=True)
    try:
        listed = run_cli("models", "--server", url)
        assert listed.returncode == 0 and f"{url} interrupts requests" in listed.stderr
        assert "--interrupt_requests False" in listed.stderr
        prompts = tmp_path / "p.txt"
        prompts.write_text("\n".join(f"Write the number {n} in words." for n in range(6)))
        out = tmp_path / "out.json"
        ran = run_cli(
            "run", str(prompts), "--server", f"{url}#2", "--max-tokens", "12", "--out", str(out)
        )
    finally:
        process.kill()
        process.wait()
    assert ran.returncode == 0, ran.stderr
    assert f"{url} interrupts requests" in ran.stderr and "0 empty" not in ran.stderr
    results = json.loads(out.read_text())["results"]
    assert all(r["success"] and r["response_text"].strip() for r in results)
    assert all(r["finish_reason"] in ("stop", "length") for r in results)
    (summary,) = BatchProcessor().job_summaries()
    job, _ = BatchProcessor().load_job(summary.job_id)
    assert [str(e) for e in job.server.endpoints] == [f"{url}#1"]


def test_jobs_have_names_from_their_files_or_given(tmp_path):
    """Fourteen jobs on one model once all read the same: each has a name now, its job
    file's or its input's unless given, in every listing."""
    (tmp_path / "reviews.txt").write_text("hello\n")
    (tmp_path / "labels.toml").write_text('[input]\nprompts = "reviews.txt"\n')
    with FakeServer() as fake:
        fake.reply = "yes"
        for args in (
            [str(tmp_path / "labels.toml")],
            [str(tmp_path / "reviews.txt")],
            [str(tmp_path / "reviews.txt"), "--name", "second  try"],
        ):
            done = run_cli("run", *args, "--server", fake.url)
            assert done.returncode == 0, done.stderr
        for bad, said in (("bad\x07", "control character"), ("x" * 81, "at most 80")):
            done = run_cli(
                "run", str(tmp_path / "reviews.txt"), "--name", bad, "--server", fake.url
            )
            assert done.returncode == 2 and said in done.stderr
    listed = json.loads(run_cli("checkpoints", "--json").stdout)["checkpoints"]
    names = {job["name"]: job["job_id"] for job in listed}
    assert set(names) == {"labels", "reviews", "second try"}
    table = run_cli("checkpoints").stdout
    assert table.splitlines()[0].split()[:3] == ["JOB", "ID", "NAME"]
    assert "second try" in table and "labels" in table
    stats = run_cli("stats", names["labels"]).stdout
    assert stats.startswith(f"Job {names['labels']} (labels) on fake-model")
    compared = run_cli("compare", names["labels"], names["second try"]).stdout
    assert "labels" in compared and "second try" in compared
