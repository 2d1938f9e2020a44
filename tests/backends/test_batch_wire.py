"""Batch API lines: ids that name the job, prompt and attempt and read back only for
their job; files split under both limits, every line kept in order; output and error
lines (as the test Batch API server writes them, in any order) read and checked, a
malformed one said in one error."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_batch.backends.remote.batch_wire import (
    ENDPOINT,
    InputFile,
    parse_custom_id,
    read_line,
    request_line,
)
from tui_batch.backends.remote.batch_wire import custom_id as line_id
from tui_batch.backends.remote.chat_wire import MalformedAnswer, chat_request
from tui_batch.core.jobs import GenerationSettings, Prompt

from support.batch_api_server import BatchApiServer

JOB_IDS = st.text(alphabet="abcdef0123456789:-_", min_size=1, max_size=20)


@given(JOB_IDS, st.integers(0, 10**9), st.integers(1, 1000))
def test_an_id_reads_back_for_its_job_only(job_id, index, attempt):
    text = line_id(job_id, index, attempt)
    assert parse_custom_id(text, job_id) == (index, attempt)
    assert parse_custom_id(text, job_id + "x") is None


@given(st.one_of(st.text(max_size=300), st.integers(), st.none()))
def test_anything_else_is_no_id_of_the_job(value):
    found = parse_custom_id(value, "job1")
    assert found is None or (isinstance(value, str) and value.startswith("job1:"))


@given(
    st.lists(st.binary(min_size=1, max_size=30), max_size=40),
    st.integers(1, 10),
    st.integers(40, 200),
)
def test_files_keep_under_both_limits_and_every_line_in_order(lines, max_lines, max_bytes):
    files, current = [], InputFile(max_lines, max_bytes)
    for line in lines:
        if not current.add(line):
            files.append(current)
            current = InputFile(max_lines, max_bytes)
            assert current.add(line)
    files.append(current)
    read = [file.ready().read() for file in files]
    assert b"".join(read) == b"".join(lines)
    for file, data in zip(files, read, strict=True):
        assert file.lines <= max_lines and len(data) == file.size <= max_bytes
        file.close()


def test_a_line_over_the_byte_limit_alone_does_not_fit():
    file = InputFile(5, 10)
    assert not file.fits(b"x" * 11) and not file.add(b"x" * 11) and file.fits(b"x" * 10)
    file.close()


def test_lines_sent_to_the_test_server_come_back_matched_by_id_in_any_order():
    settings = GenerationSettings(max_tokens=8, system_prompt="Be brief.")
    prompts = [Prompt(f"Say {n} — «{n}».") for n in range(25)]
    lines = [
        request_line(line_id("job1", n, 1), chat_request(p, settings, "m", stream=False))
        for n, p in enumerate(prompts)
    ]
    assert json.loads(lines[0])["url"] == ENDPOINT and lines[0].endswith(b"\n")
    with BatchApiServer() as server:
        server.line_errors[line_id("job1", 3, 1)] = 503
        client = openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)
        uploaded = client.files.create(
            file=("in.jsonl", io.BytesIO(b"".join(lines))), purpose="batch"
        )
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
        )
        while batch.status not in ("completed", "failed"):
            time.sleep(0.05)
            batch = client.batches.retrieve(batch.id)
        read = [
            read_line(raw)
            for file_id in (batch.output_file_id, batch.error_file_id)
            for raw in client.files.content(file_id).text.splitlines()
        ]
    by_index = {parse_custom_id(answer.custom_id, "job1")[0]: answer for answer in read}
    assert sorted(by_index) == list(range(25))
    assert by_index[0].piece.text == "echo: Say 0 — «0»." and by_index[0].piece.usage
    assert by_index[3].piece is None and by_index[3].error.startswith("HTTP 503")


def test_an_expired_line_and_malformed_lines():
    expired = read_line(
        '{"custom_id": "j:1:1", "response": null, '
        '"error": {"code": "batch_expired", "message": "not run in time"}}'
    )
    assert expired.expired and expired.error == "batch_expired: not run in time"
    for raw in ("{", "[]", '{"custom_id": 5}', '{"custom_id": "j:1:1"}', "9" * 5000):
        with pytest.raises(MalformedAnswer):
            read_line(raw)
    no_choices = '{"custom_id": "j:1:1", "response": {"status_code": 200, "body": {}}}'
    with pytest.raises(MalformedAnswer, match="no choices"):
        read_line(no_choices)
