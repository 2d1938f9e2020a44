"""Server settings, the admission rules on their own, and checkpoints from before servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3

import pytest

from tui_batch.backends.remote.admission import Admission, Outcome, TokenBucket
from tui_batch.core.checkpoint_file import SCHEMA_VERSION
from tui_batch.core.errors import SettingsError
from tui_batch.core.jobs import Attempt, BatchResult
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.servers import (
    ServerSettings,
    check_key_env,
    parse_endpoint,
    server_settings_from_text,
)

from support.checkpoints import made_before_checks


@pytest.mark.parametrize(
    ("text", "url", "cap"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1", None),
        ("http://localhost:8000", "http://localhost:8000/v1", None),
        ("https://api.example.com/v1/#8", "https://api.example.com/v1", 8),
        ("  http://[::1]:11434/v1#2 ", "http://[::1]:11434/v1", 2),
    ],
)
def test_endpoints_parse(text, url, cap):
    endpoint = parse_endpoint(text)
    assert (endpoint.url, endpoint.concurrency) == (url, cap)
    assert parse_endpoint(str(endpoint)) == endpoint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "127.0.0.1:8000",
            "expected a URL starting with http:// or https://, like http://127.0.0.1:8000/v1",
        ),
        ("ftp://host/v1", "expected a URL starting with http://"),
        ("http://user:sk-secret@host/v1", "must not hold a user name or password"),
        # Malformed otherwise too: the password is still never quoted.
        ("http://user:sk-secret@host:99999/v1", "must not hold a user name or password"),
        ("ftp://user:sk-secret@host/v1", "must not hold a user name or password"),
        ("http://user:sk-secret@host/v1#x", "must not hold a user name or password"),
        ("user:sk-secret@host:8000", "must not hold a user name or password"),
        ("http://u:sk-sec#ret@host/v1", "must not hold a user name or password"),
        ("http://host/v1?key=sk-secret", "query string is not supported"),
        ("http://host/v1#0", "Concurrency: must be at least 1"),
        ("http://host/v1#many", "expected a whole number"),
        ("", "a URL is required"),
    ],
)
def test_bad_endpoints_say_why_without_echoing_secrets(text, message):
    with pytest.raises(SettingsError) as caught:
        parse_endpoint(text)
    assert message in str(caught.value)
    assert "sk-secret" not in str(caught.value) and "sk-sec" not in str(caught.value)


def test_the_key_variable_is_a_name_and_a_key_given_instead_is_not_echoed():
    assert check_key_env(" MY_KEY ") == "MY_KEY"
    with pytest.raises(SettingsError) as caught:
        check_key_env("sk-proj-abcdef123456")
    assert "sk-proj" not in str(caught.value) and "not the key itself" in str(caught.value)


def test_server_settings_check_themselves_and_round_trip():
    server = server_settings_from_text(
        ["http://a:1/v1#4", "http://b:2"], {"concurrency": "8", "rpm": "600", "tpm": ""}
    )
    assert (server.concurrency, server.rpm, server.tpm) == (8, 600, None)
    assert [server.cap(e) for e in server.endpoints] == [4, 8]
    assert ServerSettings.from_dict(json.loads(json.dumps(server.to_dict()))) == server
    with pytest.raises(SettingsError, match="given twice"):
        server_settings_from_text(["http://a:1/v1", "http://a:1/v1/"], {})
    with pytest.raises(SettingsError, match="Requests/min: must be at least 1"):
        server_settings_from_text(["http://a:1"], {"rpm": "0"})
    with pytest.raises(SettingsError, match="longer than the request timeout"):
        server_settings_from_text(
            ["http://a:1"], {"first_token_timeout": "100", "request_timeout": "10"}
        )


def test_a_token_bucket_spreads_a_minute_and_lets_big_requests_go_into_debt():
    bucket = TokenBucket(120, now=0.0)  # 2 a second, at most 2 at once
    assert bucket.wait(1, 0.0) == 0
    bucket.take(1)
    bucket.take(1)
    assert bucket.wait(1, 0.0) == pytest.approx(0.5)
    assert bucket.wait(1, 0.5) == 0
    tokens = TokenBucket(600, now=0.0)  # 10 a second, holds 10
    assert tokens.wait(50, 0.0) == 0  # bigger than the bucket: waits for a full one
    tokens.take(50)
    assert tokens.wait(5, 0.0) == pytest.approx(4.5)  # 40 in debt, then 5


def run_async(coroutine):
    return asyncio.run(coroutine)


def test_admission_balances_halves_grows_and_probes():
    clock = [0.0]
    server = ServerSettings(
        (parse_endpoint("http://a:1/v1#4"), parse_endpoint("http://b:2/v1#2")), concurrency=6
    )
    admission = Admission(server, clock=lambda: clock[0])
    a, b = admission.endpoints

    async def take(count):
        return [await admission.acquire(1) for _ in range(count)]

    taken = run_async(take(6))
    # The fewest in flight for each endpoint's limit: a gets 4 of 6, b 2.
    assert [s.url for s in taken].count(a.url) == 4 and b.in_flight == 2
    admission.release(a, Outcome.THROTTLED, retry_after=30.0, error="HTTP 429")
    assert (a.limit, a.cooling_until) == (2, 30.0)
    assert admission.status().endpoints[0].state == "cooling"
    admission.release(b, Outcome.DOWN, error="connection refused")
    assert b.out_until == 1.0 and admission.status().endpoints[1].state == "out"
    admission.release(b, Outcome.OK)
    assert b.out_until is None and "is back" in admission.notes[-1]
    for state in (a, a, a):
        admission.release(state, Outcome.UNSENT)
    assert admission.in_flight == 0 and a.requests == 1
    clock[0] = 31.0
    for _ in range(5):
        a.in_flight += 1
        admission.in_flight += 1
        admission.release(a, Outcome.OK)
    assert a.limit == 3 and "limit grows to 3" in admission.notes[-1]
    assert admission.changes == len(admission.notes)
    assert admission.status().new_changes(admission.changes - 1) == [admission.notes[-1]]


# The columns formats 5 to 8 added: a structured answer's value and validity, its score,
# the cache's job, a thought apart from the answer.
STRUCTURED = (
    "output",
    "invalid",
    "score",
    "expected",
    "cached_from",
    "reasoning",
    "reasoning_tokens",
)


def test_a_checkpoint_from_before_servers_reads_and_upgrades(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a", "b"])
    path = tmp_path / f"batch_{job.job_id}.db"
    # A format 1 file again (made then without the CHECK constraints that name them).
    with sqlite3.connect(made_before_checks(path)) as connection:
        for column in (
            *("endpoint", "attempt_log", "ttft", "queue_wait", "token_counts"),
            *STRUCTURED,
        ):
            connection.execute(f"ALTER TABLE results DROP COLUMN {column}")
        connection.execute(
            "INSERT INTO results VALUES (0, 'old', 1, 2, 0.5, 1, NULL, 1, 'stop', NULL, NULL)"
        )
        connection.execute("PRAGMA user_version = 1")
    loaded, results = processor.load_job(job.job_id)
    assert results[0].response_text == "old" and results[0].endpoint is None
    new = BatchResult(
        1, "b", "new", endpoint="http://x/v1", attempt_log=[Attempt("http://x/v1", 200)]
    )
    processor.save_checkpoint(loaded, [new])
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    _, results = processor.load_job(job.job_id)
    assert [r.response_text for r in results] == ["old", "new"]
    assert results[1].attempt_log == [Attempt("http://x/v1", 200)]


def test_a_format_2_checkpoint_reads_and_gains_ttft(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a", "b"])
    path = tmp_path / f"batch_{job.job_id}.db"
    with sqlite3.connect(made_before_checks(path)) as connection:
        for column in ("ttft", "queue_wait", "token_counts", *STRUCTURED):
            connection.execute(f"ALTER TABLE results DROP COLUMN {column}")
        connection.execute(
            "INSERT INTO results VALUES (0, 'old', 1, 2, 0.5, 1, NULL, 1, 'stop', NULL, NULL, "
            "NULL, NULL)"
        )
        connection.execute("PRAGMA user_version = 2")
    loaded, results = processor.load_job(job.job_id)
    assert results[0].ttft is None
    processor.save_checkpoint(loaded, [BatchResult(1, "b", "new", ttft=0.25)])
    _, results = processor.load_job(job.job_id)
    assert [(r.response_text, r.ttft) for r in results] == [("old", None), ("new", 0.25)]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_format_3_checkpoint_reads_and_gains_queue_wait_and_token_counts(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a", "b"])
    path = tmp_path / f"batch_{job.job_id}.db"
    with sqlite3.connect(made_before_checks(path)) as connection:
        for column in ("queue_wait", "token_counts", *STRUCTURED):
            connection.execute(f"ALTER TABLE results DROP COLUMN {column}")
        connection.execute(
            "INSERT INTO results VALUES (0, 'old', 1, 2, 0.5, 1, NULL, 1, 'stop', NULL, NULL, "
            "NULL, NULL, 0.1)"
        )
        connection.execute("PRAGMA user_version = 3")
    loaded, results = processor.load_job(job.job_id)
    assert (results[0].queue_wait, results[0].token_counts) == (None, None)
    new = BatchResult(1, "b", "new", queue_wait=2.5, token_counts="streamed")
    processor.save_checkpoint(loaded, [new])
    _, results = processor.load_job(job.job_id)
    assert [(r.queue_wait, r.token_counts) for r in results] == [(None, None), (2.5, "streamed")]
    assert results[0].ttft == 0.1 and not results[1].input_known and results[1].output_known
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_format_4_checkpoint_reads_and_gains_structured_answers(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a", "b"])
    path = tmp_path / f"batch_{job.job_id}.db"
    with sqlite3.connect(made_before_checks(path)) as connection:
        for column in STRUCTURED:
            connection.execute(f"ALTER TABLE results DROP COLUMN {column}")
        connection.execute(
            "INSERT INTO results VALUES (0, 'old', 1, 2, 0.5, 0, 'boom', 1, NULL, NULL, NULL, "
            "NULL, NULL, 0.1, NULL, NULL)"
        )
        connection.execute("PRAGMA user_version = 4")
    loaded, results = processor.load_job(job.job_id)
    assert (results[0].output, results[0].invalid, results[0].errored) == (None, False, True)
    new = BatchResult(1, "b", '{"a": 1}', output={"a": 1})
    processor.save_checkpoint(loaded, [new])
    _, results = processor.load_job(job.job_id)
    assert [(r.output, r.invalid) for r in results] == [(None, False), ({"a": 1}, False)]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_format_5_checkpoint_reads_and_gains_scores(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a", "b"])
    path = tmp_path / f"batch_{job.job_id}.db"
    with sqlite3.connect(made_before_checks(path)) as connection:
        for column in STRUCTURED[2:]:
            connection.execute(f"ALTER TABLE results DROP COLUMN {column}")
        connection.execute(
            "INSERT INTO results VALUES (0, 'old', 1, 2, 0.5, 1, NULL, 1, NULL, NULL, NULL, "
            "NULL, NULL, 0.1, NULL, NULL, NULL, 0)"
        )
        connection.execute("PRAGMA user_version = 5")
    loaded, results = processor.load_job(job.job_id)
    assert (results[0].score, results[0].expected, results[0].right) == (None, None, None)
    processor.save_checkpoint(loaded, [BatchResult(1, "b", "yes", score=1.0, expected="Yes")])
    _, results = processor.load_job(job.job_id)
    assert [(r.score, r.expected, r.right) for r in results] == [
        (None, None, None),
        (1.0, "Yes", True),
    ]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_server_sent_events_are_read_as_the_spec_says():
    from tui_batch.backends.remote.chat_wire import sse_data

    async def lines():
        for line in [
            ": comment",
            "event: x",
            'data: {"a":',
            "data: 1}",
            "",
            "data:[DONE]",
            "",
            "data: late",
        ]:
            yield line

    async def collect():
        return [payload async for payload in sse_data(lines())]

    assert run_async(collect()) == ['{"a":\n1}']


def test_chunks_and_answers_are_checked_at_the_boundary():
    from tui_batch.backends.remote.chat_wire import (
        MalformedAnswer,
        StreamError,
        read_chunk,
        read_completion,
    )

    piece = read_chunk('{"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}')
    assert (piece.text, piece.finish_reason, piece.usage) == ("hi", "stop", None)
    last = read_chunk('{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}')
    assert last.usage == (3, 5) and last.text == ""
    whole = read_completion(
        b'{"choices": [{"message": {"content": null}, "finish_reason": "length"}]}'
    )
    assert (whole.text, whole.finish_reason) == ("", "length")
    for bad in ["{", "[]", '{"choices": 3}', '{"choices": [{"delta": {"content": 5}}]}',
                '{"choices": [], "usage": {"prompt_tokens": -1}}']:  # fmt: skip
        with pytest.raises(MalformedAnswer):
            read_chunk(bad)
    with pytest.raises(MalformedAnswer, match="no choices"):
        read_completion("{}")
    with pytest.raises(StreamError, match="overloaded"):
        read_chunk('{"error": {"message": "server overloaded"}}')


@pytest.mark.parametrize("reader", ["read_chunk", "read_completion"])
def test_no_answer_breaks_the_readers(reader):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tui_batch.backends.remote import chat_wire

    read = getattr(chat_wire, reader)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
    shaped = st.fixed_dictionaries(
        {},
        optional={
            "choices": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "delta": json_values,
                        "message": json_values,
                        "finish_reason": json_values,
                    },  # fmt: skip
                ),
                max_size=3,
            )
            | json_values,
            "usage": json_values,
            "error": json_values,
        },
    )

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(max_size=200), json_values.map(json.dumps), shaped.map(json.dumps)))
    def check(payload):
        with contextlib.suppress(chat_wire.MalformedAnswer, chat_wire.StreamError):
            read(payload)

    check()
