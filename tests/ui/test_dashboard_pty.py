"""The dashboard's terminal is never taken from it: no library call in its process swaps
file descriptors 1 and 2 (llama-cpp-python's `suppress_stdout_stderr` did, from two
preview workers at once, and left the screen frozen on /dev/null)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from tui_batch.backends.factory import length_check, llama_backend
from tui_batch.backends.llama import tokens as llama_tokens
from tui_batch.core.jobs import Prompt
from tui_batch.core.settings import GenerationSettings

from conftest import EXAMPLES
from support.pty_session import PtySession


@pytest.mark.model
def test_loading_models_and_vocabularies_never_swaps_the_standard_descriptors(
    demo_model, monkeypatch
):
    swapped: list[int] = []
    real_dup2 = os.dup2

    def spy(fd: int, fd2: int, *args: object) -> int:
        swapped.append(fd2)
        return real_dup2(fd, fd2, *args)

    monkeypatch.setattr(os, "dup2", spy)
    monkeypatch.setattr(llama_tokens, "_loaded", None)
    prompts = [Prompt("Write a haiku about " + "tea " * 40)]
    errors: list[BaseException] = []

    def count() -> None:
        try:
            length_check(demo_model, 64).too_long(prompts)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=count) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for parallel in (0, 2):  # one prompt at a time through Llama, and the decode loop
        settings = GenerationSettings(n_ctx=256, n_threads=1, parallel=parallel)
        backend = llama_backend(demo_model, settings)
        backend.open(settings)
        backend.close()
    assert not errors
    assert not [fd for fd in swapped if fd in (1, 2)]


@pytest.mark.model
def test_two_previews_at_once_leave_the_dashboard_its_terminal(tmp_path, demo_model):
    """A prompts file in the Prompts tab and a template with its data file in the
    Template tab, context 80: both previews count tokens at once when the dashboard
    opens. It must keep its terminal and answer keys, every time."""
    data = tmp_path / "data"
    (data / "config").mkdir(parents=True)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say hi\n" + "a long prompt " * 30 + "\n")
    setup = {
        "prompts_path": str(prompts),
        "input": "prompts",
        "n_ctx": "80",
        "model": str(demo_model),
        "template": {
            "template": str(EXAMPLES / "review_headline.jinja"),
            "data": str(EXAMPLES / "reviews.csv"),
            "id_field": "id",
        },
    }
    for _ in range(3):  # the freeze came in 4 of 5 launches
        # Each launch from this setup: quitting keeps the last one's form as a draft.
        (data / "config" / "last_setup.json").write_text(json.dumps(setup))
        with PtySession(env={"TUI_BATCH_DATA_DIR": str(data)}) as app:
            # The prompts tab's preview has counted: its warning is on the screen.
            app.wait_for("too long for the context")
            assert app.descriptors()[1].startswith("/dev/pts/")
            assert app.descriptors()[2].startswith("/dev/pts/")
            mark = len(app.output)
            app.press("f2")  # the template tab: its preview, counted too
            app.wait_for("do not fit the context", since=mark)
            mark = len(app.output)
            app.press("escape", "f1")
            app.wait_for("Everywhere", since=mark)  # the help screen: keys answered
            assert app.descriptors() == {fd: app.descriptors()[0] for fd in (0, 1, 2)}


@pytest.mark.model
@pytest.mark.parametrize("signal_after", [0.0, 3.0])
def test_a_closed_terminal_stops_the_job_saved_and_ends_the_process(tmp_path, signal_after):
    """SIGHUP with the terminal gone: Textual's writes to it fail and its output queue
    fills, and the event loop blocks on it for good, so a handler run by the loop never
    ran: the process lived on with the job running. The job stops, saved, and the
    process ends with 128 + SIGHUP, whether the signal comes at once or later."""
    import signal
    import subprocess

    from tui_batch.core.jobs import JobStatus
    from tui_batch.core.processor import BatchProcessor

    data = tmp_path / "data"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Write a long story about the number {i}.\n" for i in range(40)))
    with PtySession([str(prompts)], env={"TUI_BATCH_DATA_DIR": str(data)}) as app:
        app.wait_for("40 prompts")
        app.press("ctrl+r")
        app.wait_for("running")
        app.hang_up(signal_after)
        try:
            code = app.process.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the dashboard outlived its terminal") from None
    assert code == 128 + signal.SIGHUP
    [summary] = BatchProcessor(data / "checkpoints").job_summaries()
    assert summary.status is JobStatus.CANCELLED and summary.done < 40
