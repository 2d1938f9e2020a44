"""Helpers for the command-line tests: `tui-batch` started as a real subprocess, read as
it runs, killed and resumed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tui_batch.core.processor import BatchProcessor

from conftest import EXAMPLES, run_cli

FAST = ["--max-tokens", "16", "--threads", "1"]


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tui_batch", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_until_done(process: subprocess.Popen[str], count: int) -> tuple[str, list[str]]:
    """Read stderr until `count` prompts are done; return the job id and the lines read."""
    lines: list[str] = []
    job_id = None
    for line in process.stderr:
        lines.append(line)
        if job_id is None and (match := re.match(r"Job (\w+):", line)):
            job_id = match.group(1)
        if f"({count}/" in line:
            return job_id, lines
    raise AssertionError("the run ended early:\n" + "".join(lines))


def kill_then_resume(tmp_path: Path, kill_at: int, *options: str):
    """Run the 25 examples, SIGKILL the run once `kill_at` are done, then resume it to the
    end, checking that nothing saved ran twice and every earlier answer stayed as it was.

    Returns the job and results as saved at the kill, and whether results were exported
    before the resume."""
    out = tmp_path / "out.json"
    process = start_cli(
        "run",
        str(EXAMPLES / "batch_prompts.txt"),
        *FAST,
        *options,
        "--checkpoint-every",
        "2",
        "--out",
        str(out),
    )
    job_id, _ = read_until_done(process, kill_at)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    job, saved = BatchProcessor().load_job(job_id)
    exported_before_resume = out.exists()

    resumed = run_cli("resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({25 - len(saved)} to run;" in resumed.stderr  # nothing saved runs twice
    results = json.loads(out.read_text())["results"]
    assert [r["prompt_index"] for r in results] == list(range(25))
    before = {r.prompt_index: r.to_dict() for r in saved}
    assert all(results[i] == before[i] for i in before)  # earlier answers unchanged
    return job, saved, exported_before_resume
