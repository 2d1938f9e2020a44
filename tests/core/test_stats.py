"""A job's figures, computed with SQL over its checkpoint: checked by hand on a made-up
job, against plain Python on random ones, and through `tui-batch stats` on the real model."""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_batch.core.errors import CheckpointError, SettingsError
from tui_batch.core.jobs import Attempt, BatchResult
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.results import ResultsView
from tui_batch.core.stats import Prices, job_stats, normalise_error

from conftest import EXAMPLES, run_cli
from support.checkpoints import made_before_checks

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: int) -> str:
    return (START + timedelta(seconds=seconds)).isoformat()


def made_up_job(tmp_path):
    """Ten prompts, eight finished: three failed on the context, two retried, two servers."""
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", [f"p{i}" for i in range(10)])
    results = []
    for i in range(8):
        ok = i % 3 != 0
        log = []
        if i == 5:
            log = [Attempt("http://a/v1", 429, "HTTP 429"), Attempt("http://b/v1", 200, ttft=0.2)]
        results.append(
            BatchResult(
                i,
                f"p{i}",
                "x",
                tokens_input=10 + i,
                tokens_output=20 + i,
                duration=1.0 + i,
                success=ok,
                error_message=None
                if ok
                else f"Prompt is {2000 + i} tokens but the context holds 2048",
                attempts=1 + i % 2,
                started_at=at(2 * i),
                completed_at=at(2 * i + 1),
                ttft=0.1 * i,
                endpoint="http://a/v1" if i < 4 else "http://b/v1",
                attempt_log=log,
            )  # fmt: skip
        )
    processor.save_checkpoint(job, results)
    return job


def test_figures_of_a_made_up_job_match_the_hand_computed_ones(tmp_path):
    stats = job_stats(made_up_job(tmp_path).checkpoint_file, Prices(1.0, 2.0))
    assert (stats.total, stats.completed, stats.failed, stats.pending) == (10, 5, 3, 2)
    assert stats.success_rate == pytest.approx(62.5)
    assert (stats.tokens_input, stats.tokens_output) == (108, 188)
    # Succeeded: 1, 2, 4, 5, 7 -> durations 2, 3, 5, 6, 8; nearest rank of 5 values.
    latency = stats.latency
    assert (latency.count, latency.mean) == (5, pytest.approx(4.8))
    assert (latency.p50, latency.p90, latency.p99, latency.max) == (5.0, 8.0, 8.0, 8.0)
    # ttft: 0.1, 0.2, 0.4, then 0.5 is the server's 0.2 (the request that answered), 0.7
    assert stats.ttft.p50 == pytest.approx(0.4) and stats.ttft.max == pytest.approx(0.7)
    # tokens/s a prompt: 21/2, 22/3, 24/5, 25/6, 27/8
    assert stats.prompt_tokens_per_second.p50 == pytest.approx(24 / 5)
    assert stats.attempts == {1: 4, 2: 4}
    (group,) = stats.failures
    assert group.reason == "Prompt is N tokens but the context holds N"
    assert (group.count, group.examples) == (3, [0, 3, 6])
    a, b = stats.endpoints
    assert (a.endpoint, a.results, a.failed, a.tokens_output) == ("http://a/v1", 4, 2, 86)
    assert (a.mean_latency, a.requests, a.request_errors) == (2.5, 1, 1)
    assert (b.results, b.failed, b.requests, b.mean_ttft) == (4, 1, 1, pytest.approx(0.2))
    # 0..15 s, eight one-second prompts a second apart: with stamps in whole seconds a
    # second between an end and the next start is no pause.
    assert stats.active_seconds == 15 and stats.tokens_per_second == pytest.approx(188 / 15)
    assert stats.bucket_seconds == 1
    assert stats.throughput[:2] == [(1, 20, 1), (3, 21, 1)]
    assert stats.cost == pytest.approx({"input": 108e-6, "output": 376e-6, "total": 484e-6})
    # Latency 2..8 s in 12 bins of 0.5 s: 2, 3, 5, 6 and 8 (the last bin holds the max).
    histogram = stats.latency_histogram
    assert len(histogram) == 12 and histogram[0] == (2.0, 1) and histogram[-1] == (7.5, 1)
    assert sum(count for _, count in histogram) == 5
    document = stats.to_dict()
    assert document["cost"]["total"] == pytest.approx(484e-6) and document["pending"] == 2
    assert "cost" not in job_stats(made_up_job(tmp_path / "b").checkpoint_file).to_dict()


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("HTTP 429: slow down after 3.5s", "HTTP 429: slow down after Ns"),
        ("timeout: first token after 300s", "timeout: first token after Ns"),
        ("connection refused (127.0.0.1:8001)", "connection refused (N:N)"),
        ("bad request req_a1B2c3 9f8e7d6c5b4a", "bad request <id> <id>"),
        ("id 123e4567-e89b-12d3-a456-426614174000 gone", "id <id> gone"),
        (None, "(no message)"),
    ],
)
def test_failures_are_grouped_without_their_numbers_and_ids(message, reason):
    assert normalise_error(message) == reason


def test_prices_must_be_numbers_of_zero_or_more():
    with pytest.raises(SettingsError, match="Price in: must be at least"):
        Prices(-1, 1)
    with pytest.raises(SettingsError, match="Price out: expected a number"):
        Prices(1, "cheap")


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


RESULTS = st.lists(
    st.tuples(
        st.booleans(),
        st.floats(0.001, 100, allow_nan=False),
        st.integers(0, 500),
        st.integers(1, 4),
        st.integers(0, 300),
        st.integers(0, 20),
        st.sampled_from(["HTTP 500", "timeout after 3s", "timeout after 12s", "boom 7"]),
    ),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(RESULTS)
def test_sql_and_plain_python_agree_on_random_jobs(tmp_path_factory, rows):
    processor = BatchProcessor(tmp_path_factory.mktemp("stats"))
    job = processor.create_job("m", [f"p{i}" for i in range(len(rows) + 3)])
    results = [
        BatchResult(
            i,
            f"p{i}",
            "x",
            tokens_input=7,
            tokens_output=tokens,
            duration=duration,
            success=ok,
            error_message=None if ok else error,
            attempts=attempts,
            started_at=at(start),
            completed_at=at(start + length),
        )  # fmt: skip
        for i, (ok, duration, tokens, attempts, start, length, error) in enumerate(rows)
    ]
    processor.save_checkpoint(job, results)
    stats = job_stats(job.checkpoint_file)

    good = [r for r in results if r.success]
    assert (stats.completed, stats.failed) == (len(good), len(results) - len(good))
    assert stats.tokens_output == sum(r.tokens_output for r in results)
    durations = [r.duration for r in good]
    if durations:
        for p in (50, 90, 99):
            assert getattr(stats.latency, f"p{p}") == nearest_rank(durations, p)
        assert stats.latency.mean == pytest.approx(sum(durations) / len(durations))
    else:
        assert stats.latency.count == 0 and stats.latency.p50 is None
    expected_groups: dict[str, int] = {}
    for r in results:
        if not r.success:
            key = normalise_error(r.error_message)
            expected_groups[key] = expected_groups.get(key, 0) + 1
    assert {g.reason: g.count for g in stats.failures} == expected_groups
    attempts: dict[int, int] = {}
    for r in results:
        attempts[r.attempts] = attempts.get(r.attempts, 0) + 1
    assert stats.attempts == attempts
    # Active time: the union of [start, end] intervals (whole seconds), less gaps of
    # more than a second.
    spans = sorted((start, start + length) for _, _, _, _, start, length, _ in rows)
    busy, current = 0, None
    for s, e in spans:
        if current is None or s > current[1] + 1:
            if current:
                busy += current[1] - current[0]
            current = [s, e]
        else:
            current[1] = max(current[1], e)
    busy += current[1] - current[0]
    assert stats.active_seconds == max(1, busy)
    assert sum(n for _, _, n in stats.throughput) == len(results)


@pytest.mark.model
def test_prices_given_to_run_are_the_jobs(tmp_path):
    done = run_cli(
        "run", str(EXAMPLES / "batch_prompts.txt"), "--max-tokens", "2", "--threads", "1",
        "--price-in", "2", "--price-out", "10",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (summary,) = BatchProcessor().job_summaries()
    figures = json.loads(run_cli("stats", summary.job_id, "--json").stdout)
    assert figures["prices"] == {"input": 2.0, "output": 10.0}
    expected = figures["tokens_input"] * 2e-6 + figures["tokens_output"] * 10e-6
    assert figures["cost"]["total"] == pytest.approx(expected)
    bad = run_cli("run", str(EXAMPLES / "batch_prompts.txt"), "--price-in", "x", "--price-out", "1")
    assert bad.returncode == 2 and "Price in: expected a number" in bad.stderr


@pytest.mark.model
def test_stats_of_a_real_run(tmp_path):
    done = run_cli(
        "run", str(EXAMPLES / "batch_prompts.txt"), "--max-tokens", "8", "--threads", "1",
        "--out", str(tmp_path / "out.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (summary,) = BatchProcessor().job_summaries()
    shown = run_cli("stats", summary.job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    figures = json.loads(shown.stdout)
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert figures["completed"] == 25 and figures["failed"] == 0
    assert figures["tokens_output"] == sum(r["tokens_output"] for r in results)
    # The local model streams: every prompt has a time to first token, under its latency.
    assert figures["ttft"]["count"] == 25
    assert 0 < figures["ttft"]["p50"] <= figures["latency"]["p50"]
    assert all(r["ttft"] is not None and r["ttft"] <= r["duration"] for r in results)
    text = run_cli("stats", summary.job_id, "--price-in", "0.1", "--price-out", "0.4")
    assert "25 succeeded" in text.stdout and "cost       0.0" in text.stdout
    assert "cost" not in run_cli("stats", summary.job_id).stdout  # no prices, no cost
    assert "latency" in text.stdout and "Tokens generated over time" in text.stdout
    assert run_cli("stats", "nope").stderr.startswith("tui-batch: error: No checkpoint for job")


def test_text_from_servers_reaches_the_terminal_escaped(tmp_path):
    from tui_batch.core.stats_text import stats_lines

    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m\x1b[2J", ["a"])
    failure = BatchResult(0, "a", "", success=False, error_message="boom \x1b[31mred\x07")
    processor.save_checkpoint(job, [failure])
    text = "\n".join(stats_lines(job_stats(job.checkpoint_file)))
    assert "\x1b" not in text and "\x07" not in text
    assert "boom \\x1b[Nmred\\x07" in text and "m\\x1b[2J" in text  # N: a number


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("DROP TABLE results", "no results table"),
        (
            "UPDATE results SET duration = 'abc' WHERE prompt_index = 1",
            "result 1 has a wrong duration",
        ),
        (
            "UPDATE results SET duration = 9e999 WHERE prompt_index = 1",
            "result 1 has a wrong duration",
        ),
        (
            "UPDATE results SET response_text = x'00ff' WHERE prompt_index = 1",
            "wrong response_text",
        ),
        ("UPDATE results SET error_message = x'41' WHERE prompt_index = 1", "wrong error_message"),
        ("UPDATE prompts SET data = x'7b7d' WHERE idx = 0", "prompt 0 is damaged"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_for_stats_compare_and_results(tmp_path, damage, said):
    processor = BatchProcessor()
    for job_id in ("good", "bad"):
        job = processor.create_job("m", ["a", "b", "c"], job_id=job_id)
        processor.process_batch(job, str.upper)
    # Damaged as a file from before the checks were its tables' (one made now refuses it).
    with sqlite3.connect(made_before_checks(processor.store.path_for("bad"))) as connection:
        connection.execute(damage)
    for args in (
        ["stats", "bad"],
        ["stats", "bad", "--json"],
        ["compare", "good", "bad"],
        ["compare", "bad", "good", "--json"],
        ["compare", "bad", "good", "--csv"],
    ):
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert said in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    with pytest.raises(CheckpointError, match=said):
        ResultsView(processor.store.path_for("bad"))


def test_a_checkpoint_refuses_a_wrong_row_and_its_readers_trust_it(tmp_path):
    """The rows' rules are the tables' CHECK constraints: SQLite refuses a damaged row
    as it is written, so stats, compare and the results view read without a pass over
    every row; a file from before the constraints is checked row by row."""
    from tui_batch.core.rows import check_rows

    processor = BatchProcessor()
    job = processor.create_job("m", ["a", "b"], job_id="strict")
    processor.process_batch(job, str.upper)
    path = processor.store.path_for("strict")
    for damage in (
        "UPDATE results SET duration = 'abc'",
        "UPDATE results SET tokens_output = -1",
        "UPDATE results SET output = '{'",
        "UPDATE prompts SET data = '{\"text\": 5}'",
    ):
        with (
            pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"),
            sqlite3.connect(path) as connection,
        ):
            connection.execute(damage)
    seen: list[str] = []
    with sqlite3.connect(path) as connection:
        connection.set_trace_callback(seen.append)
        check_rows(connection)
    assert not any("FROM main.results" in sql or "FROM main.prompts" in sql for sql in seen)
    with sqlite3.connect(made_before_checks(path)) as connection:
        connection.set_trace_callback(seen.append)
        check_rows(connection)
    assert any("FROM main.results" in sql for sql in seen)
    assert any("FROM main.prompts" in sql for sql in seen)
    assert job_stats(path).completed == 2


def test_stats_json_is_json_and_its_per_server_table_fits_a_terminal(tmp_path):
    processor = BatchProcessor()
    job = processor.create_job("m", ["a"], job_id="wide")
    url = "http://inference-server-number-one.example.internal:8000/v1"
    attempt = Attempt(url, 200, latency=1.5, ttft=0.25, tokens_output=3)
    result = BatchResult(0, "a", "A", tokens_output=3, duration=1.5, endpoint=url,
                         attempt_log=[attempt])  # fmt: skip
    processor.save_checkpoint(job, [result])
    shown = run_cli("stats", "wide")
    assert shown.returncode == 0, shown.stderr
    assert max(len(line) for line in shown.stdout.splitlines()) <= 130
    assert json.loads(run_cli("stats", "wide", "--json").stdout)["endpoints"][0]["requests"] == 1


def test_a_large_job_ranks_an_even_sample_and_reads_on_two_connections(tmp_path, monkeypatch):
    """Above `spread.SAMPLE` values a percentile is read from an even sample (count,
    mean and max still from every value), and a finished job of `PARALLEL_ROWS` results
    is read on two connections at once: the same figures as on one. The limits are
    lowered here so a few thousand results stand for millions."""
    from tui_batch.core import spread as spread_module
    from tui_batch.core import stats as stats_module
    from tui_batch.core.jobs import JobStatus
    from tui_batch.core.stats_text import stats_lines

    processor = BatchProcessor(tmp_path)
    prompts = [f"p{i}" for i in range(4000)]
    job = processor.create_job("m", prompts)
    job.status = JobStatus.COMPLETED
    results = []
    for i in range(4000):
        start, end = ("00:00:00", "00:00:10") if i < 2000 else ("00:01:00", "00:01:05")
        results.append(
            BatchResult(
                i,
                prompts[i],
                "x",
                tokens_output=10,
                duration=(i * 7919 % 4000 + 1) / 1000,  # 1 ms to 4 s, shuffled
                started_at=f"2026-01-01T{start}+00:00",
                completed_at=f"2026-01-01T{end}+00:00",
            )
        )
    processor.save_checkpoint(job, results)
    path = job.checkpoint_file
    exact = job_stats(path)
    assert exact.latency.sampled is None and exact.latency.p50 == pytest.approx(2.0)
    assert exact.active_seconds == 15

    monkeypatch.setattr(spread_module, "SAMPLE", 1000)
    monkeypatch.setattr(spread_module, "MIN_SAMPLE", 100)
    opened = []
    connect = stats_module.connect_read_only
    monkeypatch.setattr(
        stats_module, "connect_read_only", lambda path: opened.append(path) or connect(path)
    )
    one = job_stats(path)
    monkeypatch.setattr(stats_module, "PARALLEL_ROWS", 1000)
    two = job_stats(path)
    assert len(opened) == 3  # one for `one`, two for `two`
    assert one.to_dict() == two.to_dict()
    latency = two.latency
    assert 800 <= latency.sampled <= 1200
    assert (latency.count, latency.mean, latency.max) == (4000, exact.latency.mean, 4.0)
    for p, value in ((50, 2.0), (90, 3.6), (99, 3.96)):
        assert getattr(latency, f"p{p}") == pytest.approx(value, abs=0.15)
    assert two.prompt_tokens_per_second.sampled == latency.sampled
    assert (two.active_seconds, two.throughput, two.latency_histogram) == (
        exact.active_seconds,
        exact.throughput,
        exact.latency_histogram,
    )
    said = "\n".join(stats_lines(two))
    assert f"p50/p90/p99 from an even sample: latency {latency.sampled:,} of 4,000" in said
    assert "from an even sample" not in "\n".join(stats_lines(exact))


def test_the_results_view_reads_a_selection_a_page_at_a_time(tmp_path, monkeypatch):
    """A filter's indices are counted with SQL and read a page at a time (on from the
    page before where it is cached, else by offset), a few pages kept: the viewer of ten
    million results holds a page, not ten million numbers."""
    from tui_batch.core import results as results_module

    monkeypatch.setattr(results_module, "INDEX_PAGE", 7)
    processor = BatchProcessor(tmp_path)
    prompts = [f"prompt {i}" for i in range(100)]
    job = processor.create_job("m", prompts)
    processor.save_checkpoint(
        job,
        [
            BatchResult(i, p, f"answer {i}")
            if i % 3
            else BatchResult(i, p, "", success=False, error_message=f"boom {i}")
            for i, p in enumerate(prompts)
        ],
    )
    failed = [i for i in range(100) if i % 3 == 0]
    with ResultsView(job.checkpoint_file) as view:
        assert view.counts() == {
            "all": 100,
            "failed": 34,
            "succeeded": 66,
            "invalid": 0,
            "wrong": 0,
        }
        chosen = view.select("failed")
        assert len(chosen) == 34 and list(chosen) == failed
        seen: list[str] = []
        view._connection.set_trace_callback(seen.append)
        assert [chosen[i] for i in range(34)] == failed  # page after page: on from the last
        assert sum("OFFSET" in sql for sql in seen) == 1  # the first page's alone
        assert (chosen[-1], chosen[2:5], chosen[33]) == (99, [6, 9, 12], 99)
        fresh = view.select("failed")
        assert fresh[30] == 90 and any("OFFSET" in sql for sql in seen)  # a jump: by offset
        with pytest.raises(IndexError):
            chosen[34]
        assert list(view.select(search="ANSWER 4")) == [4, 40, 41, 43, 44, 46, 47, 49]
        assert len(view.select("succeeded", search="prompt 9")) == 6  # 91, 92, 94 ... 98
