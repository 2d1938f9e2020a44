"""Stop signals in `tui-batch run`: the first stops after the current step, the second at
once; neither is ever lost, wherever it finds the main thread (llama.cpp calls our log
callback from C, where a raised KeyboardInterrupt used to be printed and dropped)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from tui_batch.backends.llama import loading as llama_loading
from tui_batch.cli.terminal import cancel_on_signals
from tui_batch.core.processor import BatchProcessor

from conftest import run_cli


class _Frame:
    def __init__(self, code: object) -> None:
        self.f_code = code


def test_a_second_signal_inside_the_log_callback_is_raised_again_outside_it():
    llama_loading.import_llama_cpp()  # installs the callback
    # Stopping leaves stop signals ignored (the CLI exits next): put them back for the tests.
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        _second_signal_in_the_callback()
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _second_signal_in_the_callback() -> None:
    with cancel_on_signals(io.StringIO()) as signals:
        signals._handle(signal.SIGINT, None)
        assert signals.cancel.is_set() and signals.received == signal.SIGINT
        # Found in the callback: nothing raised there, where it would be lost...
        signals._handle(signal.SIGINT, _Frame(llama_loading._log_code))
        # ...but raised again a moment later, here, in our own code.
        with pytest.raises(KeyboardInterrupt):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.01)
    assert signals.exit_status == 130
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def double_interrupt(args: list[str], first: float, gap: float, env: dict[str, str]):
    process = subprocess.Popen(
        [sys.executable, "-m", "tui_batch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    time.sleep(first)
    process.send_signal(signal.SIGINT)
    time.sleep(gap)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return process.returncode, err


@pytest.mark.model
@pytest.mark.parametrize(
    ("first", "gap"),
    # (Before 0.1 s the signal finds Python itself starting, before any of our code.)
    [(0.15, 0.01), (0.3, 0.02), (0.6, 0.05), (2.5, 0.01), (3.5, 0.1)],
    ids=[
        "while-importing",
        "while-loading",
        "loading-later",
        "while-running",
        "running-later",
    ],
)
def test_a_double_ctrl_c_always_stops_and_keeps_what_finished(tmp_path, data_dir, first, gap):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"Tell a long story about the number {n}.\n" for n in range(6)))
    args = ["run", str(prompts), "--max-tokens", "64", "--threads", "1", "--parallel", "2"]
    env = {"TUI_BATCH_DATA_DIR": str(data_dir)}
    code, err = double_interrupt(args, first, gap, env)
    assert code == 130, err
    assert "Exception ignored" not in err and "Traceback" not in err
    jobs = BatchProcessor().job_summaries()
    if not jobs:  # stopped before the job was made
        assert "Stopped before the job started" in err or "interrupted" in err
        return
    (job,) = jobs
    assert job.status.value == "cancelled" and job.resumable
    assert f"tui-batch resume {job.job_id}" in err
    resumed = run_cli("resume", job.job_id, "--threads", "1")
    assert resumed.returncode == 0, resumed.stderr
