"""A llama-cpp-python build that dies on its first token (Illegal instruction, as a native
build on a CPU that advertises AMX): tried in a child process before the first model
loads, it is one line with the command that rebuilds it; the job is never left
`running`, and the dashboard stays up. A build that runs is tried once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tui_batch.backends.llama import build_check
from tui_batch.core.errors import ModelError
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.setup import SetupScreen

from conftest import run_cli
from support.ui import SIZE, prompts_file, wait_until

pytestmark = pytest.mark.model
FAULTY = Path(__file__).parent.parent / "support" / "faulty_llama"


def faulty_env(tmp_path: Path) -> dict[str, str]:
    """The faulty build, and a cache folder where no build has passed yet."""
    return {"PYTHONPATH": str(FAULTY), "XDG_CACHE_HOME": str(tmp_path / "xdg")}


def test_the_fault_kills_a_process_that_decodes_unchecked(tmp_path, demo_model):
    """What the check is for: the faulty build dies by the signal, as the issue saw."""
    code = (
        f"import llama_cpp; llm = llama_cpp.Llama(model_path={str(demo_model)!r}, n_ctx=64, "
        "verbose=False); llm.eval(llm.tokenize(b'hi'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **faulty_env(tmp_path)},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -4  # SIGILL


@pytest.mark.parametrize("parallel", [[], ["--parallel", "0"]])
def test_run_on_a_build_that_crashes_is_one_line_and_no_job(tmp_path, parallel):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nworld\n")
    done = run_cli("run", str(prompts), "--max-tokens", "8", *parallel, env=faulty_env(tmp_path))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert "crashed on its first token (Illegal instruction" in line
    assert "GGML_NATIVE=OFF" in line and "pip install --force-reinstall" in line
    assert "Traceback" not in done.stderr
    listed = run_cli("checkpoints", "--json")
    assert json.loads(listed.stdout)["checkpoints"] == []  # checked before a job exists


def test_a_build_that_runs_is_tried_once_and_remembered(tmp_path, demo_model, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(build_check, "_passed", set())
    build_check.check_build(demo_model)
    remembered = json.loads((tmp_path / "xdg" / "tui-batch" / "llama-builds.json").read_text())
    assert remembered["passed"] == [build_check.build_key()]
    # Tried once: the faulty build on PYTHONPATH is not run again for the same build.
    monkeypatch.setenv("PYTHONPATH", str(FAULTY))
    monkeypatch.setattr(build_check, "_passed", set())
    build_check.check_build(demo_model)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other"))
    monkeypatch.setattr(build_check, "_passed", set())
    with pytest.raises(ModelError, match="Illegal instruction"):
        build_check.check_build(demo_model)


async def test_the_dashboard_says_it_and_stays_up(tmp_path, monkeypatch):
    for name, value in faulty_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(build_check, "_passed", set())
    seen: list[str] = []
    app = TuiBatchApp(prompts_file(tmp_path, count=2, long_one=False))
    monkeypatch.setattr(
        app, "notify", lambda message, **kwargs: seen.append(str(message)), raising=False
    )
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, SetupScreen))
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: any("crashed on its first token" in m for m in seen))
        await app.workers.wait_for_complete()
        assert app.is_running
        job = app.run_state.job
        assert job.status.value != "running"
