"""Groups headless, with the demo model: a matrix run in one process and ranked, the same
answers as its variants run alone, and a group killed with -9 resumed whole."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import sqlite3

import pytest

from tui_batch.core.processor import BatchProcessor

from conftest import EXAMPLES, run_cli
from support.cli import FAST, start_cli
from support.logged_llama_server import fleet_events, most_in_flight, start_logged_servers
from support.mcnemar import exact_p
from support.thinking_model import demo_with_template

pytestmark = pytest.mark.model
LABELS = ["--limit", "8", "--threads", "1", "--batch-invariant", "--max-tokens", "48"]


def answers(job_id: str) -> dict[int, tuple[str, float | None]]:
    job = BatchProcessor().open_job(job_id)
    with sqlite3.connect(job.checkpoint_file) as connection:
        rows = connection.execute("SELECT prompt_index, response_text, score FROM results")
        return {index: (text, score) for index, text, score in rows}


def test_a_matrix_runs_as_a_group_and_ends_in_its_leaderboard(tmp_path):
    job_file = EXAMPLES / "review_labels.toml"
    out = tmp_path / "labels.csv"
    done = run_cli(
        "run", str(job_file), *LABELS, "--matrix", "temperature=0,1.5", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    group_id = re.search(
        r"Group (g\w+): 2 jobs, one for each combination of temperature", done.stderr
    )[1]
    assert "ranked by accuracy against the expected answers" in done.stdout
    assert done.stderr.count("Loading SmolLM2-135M-Instruct.Q4_1") == 1  # one model, loaded once
    assert (tmp_path / "labels-1.csv").is_file() and (tmp_path / "labels-2.csv").is_file()

    shown = run_cli("stats", group_id, "--json")
    assert shown.returncode == 0, shown.stderr
    board = json.loads(shown.stdout)
    by_variant = {v["variant"]: v for v in board["variants"]}
    assert set(by_variant) == {"temperature=0", "temperature=1.5"}
    right = {}
    for name, variant in by_variant.items():
        scores = answers(variant["job_id"])
        assert len(scores) == 8
        right[name] = {i for i, (_, score) in scores.items() if score is not None and score >= 1}
        assert variant["right"] == len(right[name]) and variant["judged"] == 8
    best, other = board["variants"]
    worse = len(right[best["variant"]] - right[other["variant"]])
    better = len(right[other["variant"]] - right[best["variant"]])
    against = other["against_best"]
    assert (against["regressions"], against["improvements"]) == (worse, better)
    assert against["p_value"] == pytest.approx(exact_p(better, worse))

    as_csv = list(csv.DictReader(io.StringIO(run_cli("stats", group_id, "--csv").stdout)))
    assert [row["job_id"] for row in as_csv] == [best["job_id"], other["job_id"]]
    assert as_csv[1]["regressions"] == str(worse)

    # The greedy variant answers as the same job run alone does.
    alone = run_cli(
        "run", str(job_file), *LABELS, "--temperature", "0", "--out", str(tmp_path / "a.csv")
    )
    assert alone.returncode == 0, alone.stderr
    alone_id = re.search(r"Job (\w+):", alone.stderr)[1]
    assert answers(alone_id) == answers(by_variant["temperature=0"]["job_id"])


def test_a_group_killed_mid_run_resumes_every_job_once(tmp_path):
    process = start_cli(
        "run",
        str(EXAMPLES / "batch_prompts.txt"),
        *FAST,
        "--checkpoint-every",
        "1",
        "--matrix",
        "seed=1,2",
        "--temperature",
        "0.8",
    )
    group_id = None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if found := re.match(r"Group (g\w+):", line):
            group_id = found[1]
        if group_id and "(4/25)" in line:
            break
    else:
        raise AssertionError("the group ended early:\n" + "".join(lines))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    jobs = BatchProcessor().group_jobs(group_id)
    assert len(jobs) == 2  # both made before the first ran
    before = {job.job_id: answers(job.job_id) for job in jobs}
    assert sum(len(saved) for saved in before.values()) >= 1

    resumed = run_cli("resume", group_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Group {group_id}: 2 jobs, 2 with prompts left" in resumed.stderr
    for job in BatchProcessor().group_jobs(group_id):
        after = answers(job.job_id)
        assert sorted(after) == list(range(25))  # every prompt once
        assert all(after[i] == before[job.job_id][i] for i in before[job.job_id])
    again = run_cli("resume", group_id)
    assert "2 jobs, 0 with prompts left" in again.stderr


def test_a_group_is_made_whole_or_not_at_all(tmp_path):
    prompts = EXAMPLES / "batch_prompts.txt"
    done = run_cli(
        "run", str(prompts), *FAST, "--matrix", "model=SmolLM2-135M-Instruct.Q4_1,nothere.gguf"
    )
    assert done.returncode == 2 and "nothere.gguf" in done.stderr
    assert "Traceback" not in done.stderr
    assert BatchProcessor().job_summaries() == []  # the first variant was not made either
    bad = run_cli("run", str(prompts), "--matrix", "temperature=0,hot")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "temperature" in bad.stderr.lower()


def test_several_inputs_run_as_one_group_in_one_process(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("Say yes.\nSay no.\n")
    second.write_text("Name a colour.\n")
    done = run_cli("run", str(first), str(second), *FAST)
    assert done.returncode == 0, done.stderr
    # At once, one line a job, each after its job's name.
    assert re.search(r"^\[a\.txt\] +Completed: 2 succeeded", done.stderr, re.M)
    assert re.search(r"^\[b\.txt\] +Completed: 1 succeeded", done.stderr, re.M)
    group_id = re.search(r"Group (g\w+): 2 jobs, from 2 inputs", done.stderr)[1]
    # Different inputs: no answers to pair, each job's line instead.
    assert "No leaderboard: the jobs of group" in done.stderr
    jobs = BatchProcessor().group_jobs(group_id)
    assert max(j.started_at for j in jobs) <= min(j.completed_at for j in jobs)  # to the second
    assert sorted((j.variant, j.total_prompts, j.status.value) for j in jobs) == [
        ("a.txt", 2, "completed"),
        ("b.txt", 1, "completed"),
    ]
    one_out = run_cli("run", str(first), str(second), "--out", str(tmp_path / "o.json"))
    assert one_out.returncode == 2 and "would write one results file" in one_out.stderr
    assert len(BatchProcessor().job_summaries()) == 2  # nothing more was made


# A second model: the demo model's weights under a chat template that tells it how to
# answer, so its answers differ.
TERSE = """{%- for message in messages -%}
<|im_start|>{{ message.role }}
{% if message.role == 'user' %}Reply with the JSON only. {% endif %}{{ message.content }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{%- endif -%}"""


def test_a_matrix_of_two_models_loads_each_once_one_at_a_time_and_answers_as_alone(tmp_path):
    terse = demo_with_template(tmp_path / "terse.gguf", TERSE)
    job_file = EXAMPLES / "review_labels.toml"
    demo = "SmolLM2-135M-Instruct.Q4_1"
    done = run_cli(
        "run", str(job_file), *LABELS, "--matrix", f"model={demo},{terse}",
        "--out", str(tmp_path / "labels.csv"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    group_id = re.search(r"Group (g\w+): 2 jobs", done.stderr)[1]
    # Each model loaded once, one at a time (--max-models 1): the second job started
    # once the first had ended.
    assert done.stderr.count("Loading ") == 2
    jobs = sorted(BatchProcessor().group_jobs(group_id), key=lambda job: job.started_at)
    assert jobs[0].completed_at <= jobs[1].started_at
    board = json.loads(run_cli("stats", group_id, "--json").stdout)
    by_model = {v["job_id"]: v for v in board["variants"]}
    right = {}
    for job in jobs:
        alone = run_cli(
            "run", str(job_file), *LABELS, "--model", job.model_path,
            "--out", str(tmp_path / f"{job.job_id}.csv"),
        )  # fmt: skip
        assert alone.returncode == 0, alone.stderr
        alone_id = re.search(r"Job (\w+):", alone.stderr)[1]
        assert answers(alone_id) == answers(job.job_id)  # batch-invariant: the same
        scores = answers(job.job_id)
        right[job.job_id] = {i for i, (_, score) in scores.items() if score and score >= 1}
        assert by_model[job.job_id]["right"] == len(right[job.job_id])
    best, other = board["variants"]
    worse = len(right[best["job_id"]] - right[other["job_id"]])
    better = len(right[other["job_id"]] - right[best["job_id"]])
    assert other["against_best"]["p_value"] == pytest.approx(exact_p(better, worse))
    assert answers(jobs[0].job_id) != answers(jobs[1].job_id)  # two models, two answers


def test_a_matrix_on_real_servers_keeps_the_fleets_limits_together(tmp_path, demo_model):
    """Two jobs at once on two real llama_cpp.servers: the servers' own logs show the
    fleet's --concurrency never exceeded by the jobs together, and both jobs' requests
    interleaved (run at once, not one after the other)."""
    logs = [tmp_path / "server-0.log", tmp_path / "server-1.log"]
    started = start_logged_servers(str(demo_model), logs)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Say a word about the number {n}.\n" for n in range(6)))
    try:
        servers = [flag for url, _ in started for flag in ("--server", url)]
        done = run_cli(
            "run", str(prompts), *servers, "--model", "smollm2", "--max-tokens", "8",
            "--concurrency", "2", "--matrix", "temperature=0,1", "--seed", "3",
        )  # fmt: skip
    finally:
        for _, process in started:
            process.kill()
            process.wait()
    assert done.returncode == 0, done.stderr
    group_id = re.search(r"Group (g\w+): 2 jobs", done.stderr)[1]
    moments = fleet_events(logs, "Say a word")
    assert sum(1 for _, change in moments if change > 0) == 12  # each prompt once a job
    assert most_in_flight(moments) == 2  # the fleet's limit, for both jobs together
    jobs = BatchProcessor().group_jobs(group_id)
    assert max(j.started_at for j in jobs) < min(j.completed_at for j in jobs)
    for job in jobs:
        assert all(text for text, _ in answers(job.job_id).values())
