"""`tui-batch` in real subprocesses, on the real demo model."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor

from conftest import EXAMPLES, REPO, run_cli
from support.cli import FAST, kill_then_resume, read_until_done, start_cli


@pytest.mark.model
def test_run_answers_the_25_example_prompts(tmp_path):
    out = tmp_path / "results.json"
    done = run_cli(
        "run", str(EXAMPLES / "batch_prompts.txt"), "--max-tokens", "24", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["summary"] == {"total": 25, "completed": 25, "failed": 0, "success_rate": 100.0}
    results = document["results"]
    assert [r["prompt_index"] for r in results] == list(range(25))
    assert all(r["response_text"].strip() and 0 < r["tokens_output"] <= 24 for r in results)
    assert all(r["tokens_input"] > 5 for r in results)
    assert document["job"]["model_id"] == "SmolLM2-135M-Instruct.Q4_1"
    progress = [line for line in done.stderr.splitlines() if line.startswith("Progress: [")]
    assert len(progress) == 25  # not a terminal: one line per update
    assert progress[-1].startswith("Progress: [" + "=" * 30 + "] 100.0% (25/25) | ETA: 0s")
    assert "Traceback" not in done.stderr


@pytest.mark.model
def test_openai_batch_file_runs_unchanged_and_exports_openai_output(tmp_path):
    out = tmp_path / "out.jsonl"
    done = run_cli("run", str(EXAMPLES / "openai_batch.jsonl"), *FAST, "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"request-{i}" for i in range(1, 11)]
    assert all(line["response"]["body"]["choices"][0]["message"]["content"] for line in lines)
    used = [line["response"]["body"]["usage"]["completion_tokens"] for line in lines]
    assert max(used) > 16 and all(n <= 32 for n in used)  # the file's max_tokens wins


@pytest.mark.model
def test_kill_9_mid_run_then_resume_answers_every_prompt_once(tmp_path):
    job, saved, exported_before_resume = kill_then_resume(tmp_path, 7, "--parallel", "0")
    assert 5 <= len(saved) < 25  # at most checkpoint_every (2) finished results lost
    assert job.status is JobStatus.RUNNING and job.done == len(saved)
    assert not exported_before_resume
    job, final = BatchProcessor().load_job(job.job_id)
    assert job.status is JobStatus.COMPLETED and len(final) == 25


@pytest.mark.model
def test_ctrl_c_saves_and_prints_the_resume_command(tmp_path):
    process = start_cli(
        "run", str(EXAMPLES / "batch_prompts.txt"), *FAST, "--checkpoint-every", "10"
    )
    job_id, lines = read_until_done(process, 3)
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130
    assert f"Resume with: tui-batch resume {job_id}" in rest
    assert "Traceback" not in rest
    printed = [int(m.group(1)) for m in re.finditer(r"\((\d+)/25\)", "".join(lines) + rest)]
    job, saved = BatchProcessor().load_job(job_id)
    assert job.status is JobStatus.CANCELLED
    assert len(saved) == printed[-1]  # a clean stop loses nothing, below checkpoint_every too


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        (None, "missing.txt", "tui-batch: error: Prompts file not found: {path}"),
        (
            "x",
            "p.docx",
            "tui-batch: error: Unsupported prompts file type '.docx': {path} "
            "(supported: .txt, .json, .jsonl, .csv)",
        ),
        ('["a",\n  nope]', "p.json", "tui-batch: error: {path}:2:3: invalid JSON: Expecting value"),
        (
            b"ok\n\xc3\x28\n",
            "p.txt",
            "tui-batch: error: {path}:2:1: invalid UTF-8 (byte 0xc3); save the file as UTF-8",
        ),
        ("# nothing\n", "p.txt", "tui-batch: error: No prompts found in {path}"),
    ],
)
def test_bad_prompt_files_exit_2_with_one_line(tmp_path, content, name, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert one_error_line(run_cli("run", str(path))) == expected.format(path=path)
    assert not (Path(os.environ["TUI_BATCH_DATA_DIR"]) / "checkpoints").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["run", "P", "--error-strategy", "sometimes"],
            "Error strategy: 'sometimes' is not one of",
        ),
        (["run", "P", "--max-tokens", "0"], "Max tokens: must be at least 1, got 0"),
        (["run", "P", "--temperature", "hot"], "Temperature: expected a number, got 'hot'"),
        (["run", "P", "--parallel", "300"], "Parallel: must be at most 255, got 300"),
        (
            ["run", "P", "--batch-invariant", "--server", "http://127.0.0.1:9"],
            "Batch-invariant (--batch-invariant) applies to local models only, not to servers",
        ),
        (["run", "P", "--retries", "-1"], "Retries: must be at least 0, got -1"),
        (["run", "P", "--model", "no-such-model"], "Unknown model 'no-such-model'"),
        (["run", "P", "--model", "/nowhere/m.gguf"], "Model file not found: /nowhere/m.gguf"),
        (["run", "P", "--model", "NOTMODEL"], "Cannot load model"),
        (
            ["run", "P", "--out", "/proc/nope/out.json"],
            "Cannot write results to /proc/nope/out.json",
        ),
        (["resume", "../x"], "Invalid job id '../x'"),
        (["resume", "abc"], "No checkpoint for job abc"),
        (["export", "abc", "--out", "x.json"], "No checkpoint for job abc"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path, args, expected):
    (tmp_path / "p.txt").write_text("hello\n")
    (tmp_path / "not-a-model.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    args = [
        {"P": str(tmp_path / "p.txt"), "NOTMODEL": str(tmp_path / "not-a-model.gguf")}.get(a, a)
        for a in args
    ]
    assert expected in one_error_line(run_cli(*args))
    assert not list((Path(os.environ["TUI_BATCH_DATA_DIR"]) / "checkpoints").glob("*.db"))


def test_checkpoints_export_and_models_commands(tmp_path, demo_model):
    processor = BatchProcessor()
    job = processor.create_job("demo", ["a", "b", "=c"])
    processor.process_batch(job, lambda p: p * 2)
    (processor.checkpoint_dir / "batch_broken.db").write_bytes(b"junk" * 100)

    listing = run_cli("checkpoints")
    assert listing.returncode == 0
    assert re.search(rf"{job.job_id}\s+-\s+demo\s+completed\s+3/3\s+0", listing.stdout)
    assert (
        "1 unreadable checkpoint(s) skipped" in listing.stderr
        and "batch_broken.db" in listing.stderr
    )
    as_json = json.loads(run_cli("checkpoints", "--json").stdout)
    assert as_json["checkpoints"][0]["job_id"] == job.job_id
    assert as_json["unreadable"][0]["path"].endswith("batch_broken.db")

    out = tmp_path / "r.csv"
    assert run_cli("export", job.job_id, "--out", str(out)).returncode == 0
    assert out.read_text().splitlines()[3].startswith("2,'=c,'=c=c,True")
    assert run_cli("export", job.job_id, "--out", str(out), "--allow-formulas").returncode == 0
    assert out.read_text().splitlines()[3].startswith("2,=c,=c=c,True")

    models = json.loads(run_cli("models", "--json").stdout)
    demo = next(m for m in models if m["source"] == "demo")
    assert demo["id"] == "SmolLM2-135M-Instruct.Q4_1" and demo["path"] == str(demo_model)
    assert (demo["architecture"], demo["quantisation"], demo["context_length"]) == (
        "llama",
        "Q4_1",
        8192,
    )
    table = run_cli("models").stdout
    assert re.search(
        r"SmolLM2-135M-Instruct\.Q4_1\s+94 MiB\s+llama\s+134\.5M\s+Q4_1\s+8192\s+demo", table
    )


def test_the_dashboard_needs_a_terminal():
    for args in ([], [str(EXAMPLES / "batch_prompts.txt")]):
        done = run_cli(*args, stdin=subprocess.DEVNULL)
        assert done.returncode == 2 and "the dashboard needs a terminal" in done.stderr


def test_python_dash_m_and_the_console_script_agree():
    version = subprocess.run(["tui-batch", "--version"], capture_output=True, text=True, cwd=REPO)
    assert version.returncode == 0 and version.stdout.startswith("tui-batch ")


class Dashboard:
    """`tui-batch PROMPTS` in a real pseudo-terminal, read as a person would see it."""

    def __init__(self, *args: str) -> None:
        import pty

        self.main, child = pty.openpty()
        os.set_inheritable(child, True)
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "36"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tui_batch", *args],
            stdin=child,
            stdout=child,
            stderr=child,
            env=env,
            close_fds=True,
        )
        os.close(child)
        self.screen = b""

    def wait_for(self, text: bytes, timeout: float = 60) -> None:
        import select
        import time

        deadline = time.monotonic() + timeout
        while text not in self.screen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.main], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.main, 65536)
                except OSError:
                    break
        assert text in self.screen, f"{text!r} never appeared"

    def wait_exit(self, timeout: float = 30) -> int:
        """The exit status, reading the terminal meanwhile (a full pty blocks the app)."""
        import time

        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):
                self.wait_for(b"\x00never\x00", timeout=0.2)
        return self.process.wait(timeout=1)

    def press(self, keys: bytes) -> None:
        os.write(self.main, keys)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.main)


def test_the_dashboard_opens_in_a_terminal_with_the_file_loaded():
    dashboard = Dashboard(str(EXAMPLES / "batch_prompts.txt"))
    try:
        dashboard.wait_for(b"25 prompts")
        assert b"Job setup" in dashboard.screen
        dashboard.press(b"\x11")  # ctrl+q
        assert dashboard.wait_exit(timeout=30) == 0
    finally:
        dashboard.close()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_the_dashboard_exits_with_128_plus_a_stop_signal(signum, code):
    dashboard = Dashboard(str(EXAMPLES / "batch_prompts.txt"))
    try:
        dashboard.wait_for(b"25 prompts")
        dashboard.process.send_signal(signum)
        assert dashboard.wait_exit(timeout=30) == code
    finally:
        dashboard.close()
