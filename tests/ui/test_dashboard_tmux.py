"""The dashboard in a real terminal (tmux), as a person drives it, on the real model:
start a job, start another while it runs, switch between them, pause one, look at the
Jobs view, quit once for both."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Terminal:
    """A tmux session of its own (its own server socket) running one command."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.socket = f"tui-batch-test-{uuid.uuid4().hex[:8]}"
        environment = " ".join(f"{key}={value}" for key, value in env.items())
        # COLUMNS and LINES (a test runner's) would override the terminal's own size.
        shell = (
            f"cd {cwd} && env -u COLUMNS -u LINES {environment} {command}; echo EXIT $?; sleep 120"
        )
        self._tmux("new-session", "-d", "-s", "t", "-x", "130", "-y", "40", shell)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            self._tmux("send-keys", "-t", "t", key)
            time.sleep(0.3)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t", "-S", "-60")

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        """The screen once it shows `pattern` (a regular expression)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            assert time.monotonic() < deadline, f"{pattern!r} not shown:\n{screen}"
            time.sleep(0.2)

    def close(self) -> None:
        self._tmux("kill-server")


def test_two_jobs_at_once_switch_pause_and_quit_once_for_both(tmp_path, data_dir):
    (tmp_path / "poems.txt").write_text(
        "".join(f"Write a long poem about the number {n}.\n" for n in range(1, 13))
    )
    (tmp_path / "poems.toml").write_text(
        '[input]\nprompts = "poems.txt"\n\n[model]\nname = "SmolLM2-135M-Instruct.Q4_1"\n'
        "threads = 1\nparallel = 4\n\n[generation]\nmax_tokens = 128\n"
    )
    env = {"TUI_BATCH_DATA_DIR": str(data_dir), "HOME": os.environ.get("HOME", str(tmp_path))}
    terminal = Terminal("tui-batch poems.toml", tmp_path, env)
    try:
        terminal.wait_for(r"12 prompts from poems\.txt")
        terminal.keys("C-r")
        first = re.search(r"Job (\w+)  model", terminal.wait_for(r"status running", 120))[1]
        terminal.keys("Escape", "C-r")  # job setup again, and a second job while it runs
        screen = terminal.wait_for(r"job 2 of 2 running", 30)
        second = re.search(r"Job (\w+)  model", screen)[1]
        assert second != first
        terminal.keys("n")  # the first job's progress
        terminal.wait_for(rf"Job {first} .*job 1 of 2 running", 10)
        terminal.keys("p")
        terminal.wait_for(rf"Job {first} .*status paused", 60)
        terminal.keys("C-j")
        jobs = terminal.wait_for(r"1 paused, 1 running", 10)
        assert re.search(rf"{first} \(poems\).*paused", jobs)
        assert re.search(rf"{second} \(poems\).*running", jobs)
        terminal.keys("C-q")
        terminal.wait_for(r"2 jobs are running", 10)
        terminal.keys("s")
        end = terminal.wait_for(r"EXIT \d+", 60)
    finally:
        terminal.close()
    assert "EXIT 0" in end and "Traceback" not in end
    for job_id in (first, second):
        assert re.search(rf"Job {job_id} stopped: \d+/12 done and saved\. Resume with", end)
    listed = run_cli("checkpoints").stdout
    for job_id in (first, second):
        assert re.search(rf"{job_id}.*cancelled", listed), listed
