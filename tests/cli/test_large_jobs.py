"""Slices and shards through `tui-batch run` on the demo model, in real processes."""

from __future__ import annotations

import json

import pytest

from tui_batch.core.slices import InputSlice

from conftest import EXAMPLES, run_cli
from support.cli import FAST

PROMPTS = EXAMPLES / "batch_prompts.txt"
LINES = [
    line.strip()
    for line in PROMPTS.read_text().splitlines()
    if line.strip() and not line.strip().startswith("#")
]


def run_slice(tmp_path, name: str, *flags: str) -> tuple[dict, str]:
    out = tmp_path / f"{name}.json"
    done = run_cli("run", str(PROMPTS), *FAST, "--max-tokens", "6", "--out", str(out), *flags)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(out.read_text()), done.stderr


@pytest.mark.model
def test_a_range_and_a_shard_run_the_records_they_name(tmp_path):
    document, said = run_slice(tmp_path, "slice", "--range", "3:10", "--shard", "2/2")
    assert [r["prompt"] for r in document["results"]] == [LINES[i - 1] for i in (4, 6, 8, 10)]
    assert "Job " in said and ": 4 prompts (records 3-10, shard 2/2) on " in said
    assert document["job"]["input_slice"]["shard"] == [2, 2]


@pytest.mark.model
def test_a_sample_is_the_seeds_draw_in_the_files_order(tmp_path):
    """The run takes the draw the seed makes (the same every time: `InputSlice.select`)."""
    document, _ = run_slice(tmp_path, "a", "--sample", "5", "--seed", "3", "--temperature", "0.5")
    numbered = [(n, line) for n, line in enumerate(LINES, start=1)]
    drawn = [line for _, line in InputSlice(sample=5, seed=3).select(numbered)]
    assert [r["prompt"] for r in document["results"]] == drawn
    assert drawn != [line for _, line in InputSlice(sample=5, seed=4).select(numbered)]
    assert [LINES.index(p) for p in drawn] == sorted(LINES.index(p) for p in drawn)


@pytest.mark.model
def test_shards_run_apart_then_merged_are_the_whole_job(tmp_path):
    """Batch-invariant decoding: the two shards, each its own process, merged with
    `tui-batch merge`, give the whole job's prompts in its order and its answers."""
    whole, _ = run_slice(tmp_path, "whole", "--batch-invariant", "--range", ":12")
    ids = []
    for i in (1, 2):
        document, _ = run_slice(
            tmp_path, f"shard{i}", "--batch-invariant", "--range", ":12", "--shard", f"{i}/2"
        )
        ids.append(document["job"]["job_id"])
    merged = run_cli("merge", *ids, "--name", "both halves")
    assert merged.returncode == 0, merged.stderr
    assert "Merged 2 shards into job " in merged.stderr and "12 prompts" in merged.stderr
    job_id = merged.stderr.split("into job ")[1].split()[0]
    out = tmp_path / "merged.json"
    assert run_cli("export", job_id, "--out", str(out)).returncode == 0
    document = json.loads(out.read_text())
    pairs = [(r["prompt"], r["response_text"]) for r in document["results"]]
    assert pairs == [(r["prompt"], r["response_text"]) for r in whole["results"]]
    assert document["job"]["merged_from"] == ids and document["job"]["name"] == "both halves"
    stats = run_cli("stats", job_id, "--json")
    figures = json.loads(stats.stdout)
    assert figures["completed"] + figures["failed"] == 12 and figures["pending"] == 0
    again = run_cli("merge", ids[0])
    assert again.returncode == 2 and "two or more" in again.stderr


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--range", "9:2"], "Range (--range): 9:2 is empty (B before A)"),
        (["--range", "x"], "Range (--range): expected A:B"),
        (["--shard", "3/2"], "Shard (--shard): shard 3 of 2: I runs from 1 to N"),
        (["--shard", "auto"], "Shard (--shard auto): none of SLURM_ARRAY_TASK_ID"),
        (["--limit", "0"], "Limit: must be at least 1"),
        (["--sample", "lots"], "Sample: expected a whole number"),
    ],
)
def test_a_wrong_slice_is_one_line_before_anything_runs(tmp_path, flags, expected):
    done = run_cli("run", str(PROMPTS), *flags, env={"TUI_BATCH_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert not (tmp_path / "checkpoints").exists() or not list(
        (tmp_path / "checkpoints").glob("*.db")
    )


@pytest.mark.model
def test_shard_auto_takes_the_launchers_numbers_and_a_job_file_keeps_auto(tmp_path):
    data = tmp_path / "p.txt"
    data.write_text("".join(f"prompt {i}\n" for i in range(1, 11)))
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    job = tmp_path / "job.toml"
    saved = run_cli("run", str(data), "--shard", "auto", "--save-job", str(job), env=slurm)
    assert saved.returncode == 0, saved.stderr
    assert 'shard = "auto"' in job.read_text()
    out = tmp_path / "out.json"
    done = run_cli("run", str(job), *FAST, "--max-tokens", "4", "--out", str(out), env=slurm)
    assert done.returncode == 0, done.stderr
    assert ": 2 prompts (shard 3/4 (auto)) on " in done.stderr
    assert [r["prompt"] for r in json.loads(out.read_text())["results"]] == ["prompt 3", "prompt 7"]


@pytest.mark.model
def test_a_token_budget_stops_before_it_is_crossed_and_resume_raises_it(tmp_path):
    out = tmp_path / "out.json"
    args = ["run", str(PROMPTS), *FAST, "--max-tokens", "16", "--out", str(out)]
    done = run_cli(*args, "--max-total-tokens", "900")
    assert done.returncode == 1, done.stderr
    stopped = done.stderr.strip().splitlines()[-1]
    assert stopped.startswith("Stopped: budget reached: ") and " of 900 tokens spent" in stopped
    assert "| budget: " in done.stderr  # the progress line says what is spent
    job_id = stopped.split("tui-batch resume ")[1].split()[0]
    export = tmp_path / "part.json"
    assert run_cli("export", job_id, "--out", str(export)).returncode == 0
    results = json.loads(export.read_text())["results"]
    spent = sum(r["tokens_input"] + r["tokens_output"] for r in results)
    assert 0 < len(results) < 25 and spent <= 900
    resumed = run_cli("resume", job_id, "--max-total-tokens", "100000")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(out.read_text())["summary"]["completed"] == 25


@pytest.mark.model
def test_a_dry_run_counts_what_a_run_takes_and_makes_nothing(tmp_path):
    data = {"TUI_BATCH_DATA_DIR": str(tmp_path / "data")}
    flags = [*FAST, "--max-tokens", "8", "--limit", "6", "--price-in", "1", "--price-out", "2"]
    dry = run_cli("run", str(PROMPTS), *flags, "--dry-run", "--dry-run-sample", "2", env=data)
    assert dry.returncode == 0, dry.stderr
    assert not (tmp_path / "data").exists()  # no checkpoint, no results, no cache
    said = dict(line.split(None, 1) for line in dry.stdout.splitlines()[1:] if line[:1] != " ")
    assert said["Prompts"] == "6 (from 6 records)"
    assert said["Cache"] == "0 would be served, 6 to run"
    assert said["Output"].startswith("at most 48 tokens (8 an answer); about ")
    assert said["Time"].startswith("about ") and "a sample of 2 prompts took" in said["Time"]
    counted = int(said["Input"].split()[0].replace(",", ""))
    out = tmp_path / "real.json"
    real = run_cli("run", str(PROMPTS), *flags, "--out", str(out), env=data)
    assert real.returncode == 0, real.stderr
    assert counted == sum(r["tokens_input"] for r in json.loads(out.read_text())["results"])


@pytest.mark.model
def test_a_dry_run_counts_the_cache_first(tmp_path):
    data = {"TUI_BATCH_DATA_DIR": str(tmp_path / "data")}
    flags = [*FAST, "--choices", "yes,no"]  # one label an answer: each finishes, and is kept
    kept = run_cli("run", str(PROMPTS), *flags, "--limit", "4", "--cache", "read-write", env=data)
    assert kept.returncode == 0, kept.stderr
    dry = run_cli("run", str(PROMPTS), *flags, "--limit", "6", "--cache", "read",
                  "--dry-run", "--dry-run-sample", "0", env=data)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "Cache      4 would be served, 2 to run" in dry.stdout
    assert "Time       not measured (--dry-run-sample 0)" in dry.stdout


def test_a_dry_run_on_a_server_estimates_its_input_and_says_so(tmp_path):
    from support.fake_server import FakeServer

    with FakeServer() as fake:
        dry = run_cli(
            "run", str(PROMPTS), "--server", fake.url, "--limit", "3", "--max-tokens", "5",
            "--dry-run", "--dry-run-sample", "1", env={"TUI_BATCH_DATA_DIR": str(tmp_path)},
        )  # fmt: skip
        assert dry.returncode == 0, dry.stderr
        assert "estimated at 4 bytes a token: the servers count their own" in dry.stdout
        assert fake.finished == 1  # the sample, and nothing more
    assert not list(tmp_path.glob("checkpoints/*.db"))


@pytest.mark.model
def test_ctrl_c_stops_a_dry_run_and_nothing_is_made(tmp_path):
    import os
    import signal

    from support.cli import start_cli

    os.environ["TUI_BATCH_DATA_DIR"] = str(tmp_path / "data")
    try:
        process = start_cli("run", str(PROMPTS), *FAST, "--max-tokens", "400", "--dry-run")
    finally:
        del os.environ["TUI_BATCH_DATA_DIR"]
    assert process.stderr is not None
    for line in process.stderr:  # the model loaded and the input being read: stop it
        if line.startswith("Reading "):
            break
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130, rest
    assert "Stopped: the dry run made nothing." in rest and "Traceback" not in rest
    assert not (tmp_path / "data").exists()
