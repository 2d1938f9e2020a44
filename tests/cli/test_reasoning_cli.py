"""A thinking model through the `tui-batch` command, in real subprocesses: the settings
checked before a model loads, saved in job files and kept by `resume` after a kill -9
mid-run, thoughts in the exports and the stats, and the answer cache never serving an
answer made under another reasoning setting."""

from __future__ import annotations

import csv
import json
import re

import pytest

from tui_batch.core.jobfile import load_job_file
from tui_batch.core.processor import BatchProcessor

from conftest import run_cli
from support.cli import kill_then_resume
from support.thinking_model import make_thinking_model

THINKING = ["--reasoning-budget", "8", "--max-tokens", "40"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_thinking_model(tmp_path_factory.mktemp("models"), opens=True)


def prompts(tmp_path, count=3):
    path = tmp_path / "p.txt"
    path.write_text("".join(f"What is {n} plus {n}?\n" for n in range(count)))
    return path


def test_a_budget_that_leaves_no_room_is_one_line_before_a_model_loads(tmp_path):
    done = run_cli("run", str(prompts(tmp_path)), "--reasoning-budget", "300")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "Reasoning budget (--reasoning-budget): a thought of 300 tokens leaves no room" in line
    assert BatchProcessor().list_checkpoints() == []
    wrong = run_cli("run", str(prompts(tmp_path)), "--reasoning", "maybe")
    assert wrong.returncode == 2 and "invalid choice: 'maybe'" in wrong.stderr


def test_the_settings_go_into_a_job_file_and_come_back(tmp_path):
    saved = tmp_path / "job.toml"
    done = run_cli(
        "run", str(prompts(tmp_path)), "--reasoning", "on", "--reasoning-effort", "low",
        *THINKING, "--save-job", str(saved),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    values = load_job_file(saved)
    assert values["reasoning"] == "on" and values["reasoning_effort"] == "low"
    assert values["reasoning_budget"] == 8
    assert "[generation]" in saved.read_text() and 'reasoning = "on"' in saved.read_text()


@pytest.mark.model
def test_kill_9_mid_run_then_resume_keeps_thinking_under_the_budget(tmp_path, model):
    short = ["--reasoning-budget", "8", "--max-tokens", "20"]
    job, saved, _ = kill_then_resume(tmp_path, 6, "--model", str(model), *short)
    job, final = BatchProcessor().load_job(job.job_id)
    assert job.settings.reasoning_budget == 8  # kept by resume
    assert len(final) == 25 and len(saved) < 25
    for result in final:
        assert result.reasoning and result.reasoning_tokens <= 8
        assert result.success == bool(result.response_text.strip())


@pytest.mark.model
def test_thoughts_are_exported_and_counted_in_the_stats(tmp_path, model):
    out = tmp_path / "out.csv"
    done = run_cli(
        "run", str(prompts(tmp_path)), "--model", str(model), *THINKING, "--threads", "1",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    job_id = re.search(r"Job (\w+):", done.stderr).group(1)
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["reasoning"] and int(row["reasoning_tokens"]) == 8 for row in rows)
    assert all(row["reasoning"] not in row["response"] for row in rows)
    stats = run_cli("stats", job_id)
    assert "Reasoning  3 answers came with a thought" in stats.stdout
    assert "thought tokens" in stats.stdout
    figures = json.loads(run_cli("stats", job_id, "--json").stdout)["reasoning"]
    assert figures["thoughts"] == 3 and figures["tokens"] == 24 and 0 < figures["share"] < 1
    lines = run_cli("export", job_id, "--format", "jsonl", "--out", str(tmp_path / "o.jsonl"))
    assert lines.returncode == 0, lines.stderr
    first = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    body = first["response"]["body"]
    assert body["choices"][0]["message"]["reasoning_content"]
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 8}


@pytest.mark.model
def test_the_cache_serves_an_answer_only_under_its_own_reasoning_setting(tmp_path, model):
    flags = ["--model", str(model), "--cache", "read-write", "--threads", "1", "--max-tokens", "40"]
    path = str(prompts(tmp_path))
    first = run_cli("run", path, *flags, "--reasoning-budget", "8")
    assert "cache: 0 of 3 answers served" in first.stderr, first.stderr
    kept = int(re.search(r"cache: (\d+) new answers kept", first.stderr).group(1))
    assert kept >= 2  # (an answer cut off by max tokens is not kept)
    other = run_cli("run", path, *flags, "--reasoning", "off")
    assert "cache: 0 of 3 answers served" in other.stderr, other.stderr
    again = run_cli("run", path, *flags, "--reasoning-budget", "8")
    assert f"cache: {kept} of 3 answers served" in again.stderr, again.stderr
    job_id = re.search(r"Job (\w+):", again.stderr).group(1)
    _, results = BatchProcessor().load_job(job_id)
    served = [r for r in results if r.cached_from]
    assert len(served) == kept and all(r.reasoning and r.reasoning_tokens == 8 for r in served)
