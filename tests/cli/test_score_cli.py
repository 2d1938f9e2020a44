"""Expected answers, scores, regressions, repeats and chained jobs through `tui-batch` in
real subprocesses, on the real demo model: the example reviews with their hand-written
sentiments (the last 10 of the first 50, then 5 unscored), scored again without running, compared
for regressions (the exit status CI reads), judged by a second job chained on the
first's answers, and a job of repeats killed with SIGKILL and resumed."""

from __future__ import annotations

import csv
import json
import signal
import time
from collections import Counter

import pytest
from cli.test_template_cli import reviews

from tui_batch.core.jobs import BatchResult, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.results import ResultsView
from tui_batch.core.scoring.methods import Scoring

from conftest import EXAMPLES, run_cli
from support.cli import FAST, read_until_done, start_cli

LABELS = str(EXAMPLES / "review_labels.toml")


def _job_id(stderr: str) -> str:
    return stderr.split("Job ", 1)[1].split(":", 1)[0]


def test_scoring_mistakes_are_one_line_before_a_model_loads(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "2+2?", "answer": "4"}\n{"prompt": "3+3?", "answer": "six("}\n')
    cases = [
        (["--expect", "answr"], "no record has a column 'answr' (columns: answer)"),
        (["--expect", "answer", "--score", "number"], "record 2: 'six(' is not a number"),
        (["--expect", "answer", "--score", "regex"], "record 2: 'six(' is not a regular"),
        (["--score", "exact"], "Score (--score) needs Expect (--expect)"),
        (["--repeats", "3"], "Repeats (--repeats): at temperature 0 every run"),
        (["--expect", "answer", "--score", "jsonfield x"], "unknown method 'jsonfield'"),
    ]
    started = time.monotonic()
    for flags, said in cases:
        done = run_cli("run", str(prompts), *flags)
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
    unscored = run_cli("score", "nosuchjob", "--expect", "answer")
    assert unscored.returncode == 2 and "No checkpoint for job nosuchjob" in unscored.stderr
    assert not BatchProcessor().job_summaries()
    assert time.monotonic() - started < 90  # no model was loaded


@pytest.mark.model
def test_the_example_reviews_scored_rescored_compared_and_judged(tmp_path):
    # Records 41 to 55: the last 10 with a sentiment written by hand, then 5 without.
    data = reviews(tmp_path, 15, expected=True, first=40)
    out = tmp_path / "labels.csv"
    done = run_cli("run", LABELS, "--data", str(data), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Scored: json-field sentiment against column 'expected_sentiment'" in done.stderr
    first = _job_id(done.stderr)
    job, results = BatchProcessor().load_job(first)
    scored = [r for r in results if r.score is not None]
    right = sum(1 for r in scored if r.right)
    assert len(scored) == 10  # the 5 without a sentiment are unscored, not wrong
    assert f"Scores: {right}/10 right" in done.stderr
    for result in scored:  # each score is the answer's sentiment against the hand's
        expected = job.prompts[result.prompt_index].variables["expected_sentiment"]
        assert result.expected == expected
        assert result.right == (result.output["sentiment"] == expected)

    # The export, the stats and the wrong filter all say the same.
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-3:] == ["expected", "score", "right"]
    assert sum(row["right"] == "True" for row in rows) == right
    assert sum(row["right"] == "" for row in rows) == 5
    stats = json.loads(run_cli("stats", first, "--json").stdout)
    assert (stats["scored"], stats["right"]) == (10, right)
    assert stats["accuracy"] == pytest.approx(right / 10)
    low, high = stats["accuracy_interval"]
    assert low <= right / 10 <= high
    [confusion] = stats["confusions"]
    assert confusion["labels"] == ["positive", "negative", "neutral"]
    hand = Counter(job.prompts[r.prompt_index].variables["expected_sentiment"] for r in scored)
    assert [sum(row) for row in confusion["matrix"]] == [
        hand[label] for label in confusion["labels"]
    ]
    diagonal = sum(confusion["matrix"][i][i] for i in range(3))
    assert diagonal == right
    text = run_cli("stats", first).stdout
    assert f"accuracy {right}/10 right" in text and "Confusion of sentiment" in text
    with ResultsView(job.checkpoint_file) as view:
        assert len(view.select("wrong")) == 10 - right

    # Scored again, another way, without running a prompt.
    again = run_cli("score", first, "--expect", "expected_sentiment", "--score", "contains")
    assert again.returncode == 0, again.stderr
    assert f"{right}/10 right" in again.stdout  # the sentiment's word is in the JSON answer
    nothing = run_cli("score", first, "--expect", "expected_sentiment", "--score", "exact")
    assert "0/10 right" in nothing.stdout  # the whole JSON is never just the word

    # A second run that may not say positive: wrong wherever the hand said positive.
    narrower = "sentiment: negative|neutral, stars: int 1..5, headline: str ..60"
    worse = run_cli("run", LABELS, "--data", str(data), "--schema", narrower,
                    "--out", str(tmp_path / "narrow.csv"))  # fmt: skip
    assert worse.returncode == 0, worse.stderr
    second = _job_id(worse.stderr)
    _, other = BatchProcessor().load_job(second)
    run_cli("score", first, "--expect", "expected_sentiment", "--score", "json-field sentiment")
    worse_at = [r.prompt_index for r in results if r.right and not other[r.prompt_index].right]
    better_at = [
        r.prompt_index for r in results if r.right is False and other[r.prompt_index].right
    ]
    compared = run_cli("compare", first, second, "--regressions", "--fail-on-regression")
    assert compared.returncode == (1 if worse_at else 0), compared.stderr
    assert f"regressions {len(worse_at)} (right in {first}" in compared.stdout
    assert f"improvements {len(better_at)}" in compared.stdout
    listed = compared.stdout.split("improvements", 1)[1].splitlines()
    marks = [line.split()[1] for line in listed if line.startswith("  r")]
    assert marks == (["regression"] * len(worse_at) + ["improved"] * len(better_at))[:20]
    backwards = run_cli("compare", second, first, "--fail-on-regression", "--json")
    assert backwards.returncode == (1 if better_at else 0)
    assert json.loads(backwards.stdout)["summary"]["improvements"] == len(worse_at)
    same = run_cli("compare", first, first, "--fail-on-regression")
    assert same.returncode == 0 and "regressions 0" in same.stdout

    # A judge chained on the first job's answers: one record per valid answer.
    judged = run_cli(
        "run", "--template", str(EXAMPLES / "judge.jinja"), "--data", f"job:{first}",
        "--id-field", "id", "--out", str(tmp_path / "judged.csv"),
    )  # fmt: skip
    assert judged.returncode == 0, judged.stderr
    assert "Answers: one of good, bad" in judged.stderr
    judge, verdicts = BatchProcessor().load_job(_job_id(judged.stderr))
    valid = [r for r in results if r.success]
    assert [p.custom_id for p in judge.prompts] == [r.custom_id for r in valid]
    assert all(v.response_text in ("good", "bad") for v in verdicts)
    headline = valid[0].output["headline"]
    assert headline in judge.prompts[0].text  # the template read the answer's field


@pytest.mark.model
def test_a_job_of_repeats_killed_and_resumed_runs_each_repeat_exactly_once(tmp_path):
    out = tmp_path / "out.json"
    process = start_cli(
        "run", str(EXAMPLES / "batch_prompts.txt"), *FAST, "--repeats", "3",
        "--temperature", "0.9", "--checkpoint-every", "2", "--out", str(out),
    )  # fmt: skip
    job_id, lines = read_until_done(process, 20)
    assert "25 prompts x 3 runs" in "".join(lines)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    _, saved = BatchProcessor().load_job(job_id)
    resumed = run_cli("resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({75 - len(saved)} to run;" in resumed.stderr
    job, results = BatchProcessor().load_job(job_id)
    runs = [(job.prompts[r.prompt_index].text, job.prompts[r.prompt_index].repeat) for r in results]
    assert len(runs) == 75 and len(set(runs)) == 75  # each repeat of each prompt once
    assert Counter(repeat for _, repeat in runs) == {0: 25, 1: 25, 2: 25}
    before = {r.prompt_index: r.to_dict() for r in saved}
    assert all(results[i].to_dict() == before[i] for i in before)  # kept as they were
    exported = json.loads(out.read_text())["results"]
    assert [row["repeat"] for row in exported[:6]] == [0, 1, 2, 0, 1, 2]
    stats = json.loads(run_cli("stats", job_id, "--json").stdout)["repeats"]
    assert stats["repeats"] == 3 and stats["prompts"] == 25
    assert 1 / 3 <= stats["mean_agreement"] <= 1
    assert sum(stats["levels"].values()) == 25


def test_a_gate_fails_when_right_answers_became_failures_or_went_missing():
    processor = BatchProcessor()
    scoring = Scoring("want")
    questions = [Prompt(f"q{n}", variables={"want": "yes"}) for n in range(3)]

    def job(prompts, success: bool) -> str:
        made = processor.create_job("m", prompts, scoring=scoring)
        results = [
            BatchResult(
                i,
                p.text,
                "yes" if success else "",
                success=success,
                error_message=None if success else "boom",
            )  # fmt: skip
            for i, p in enumerate(prompts)
        ]
        processor.save_checkpoint(made, results)
        processor.score_job(made.job_id, scoring)
        return made.job_id

    good, failed, fewer = job(questions, True), job(questions, False), job(questions[:1], True)
    for later, count in ((failed, 3), (fewer, 2)):
        done = run_cli("compare", good, later, "--fail-on-regression")
        assert done.returncode == 1, (later, done.stdout, done.stderr)
        assert f"{count} regressions: right in {good}, and wrong, failed or missing" in (
            done.stderr
        )
    assert run_cli("compare", good, good, "--fail-on-regression").returncode == 0
    # Another way round, nothing right became wrong: the gate passes.
    assert run_cli("compare", failed, good, "--fail-on-regression").returncode == 0


def test_export_refuses_a_file_name_of_another_format(tmp_path):
    made = BatchProcessor().create_job("m", ["a"])
    out = tmp_path / "results.xlsx"
    done = run_cli("export", made.job_id, "--out", str(out))
    assert done.returncode == 2 and not out.exists()
    assert "results are written as .json, .csv, .jsonl" in done.stderr
    assert run_cli("export", made.job_id, "--out", str(out), "--format", "csv").returncode == 0
