"""The client of a provider's batch endpoints, against the test Batch API server: every
call, transient faults tried again, a batch created once even when the answer to its
create is lost, a provider's refusal said in one line with the key scrubbed."""

from __future__ import annotations

import time
from collections import deque

import pytest

from tui_batch.backends.remote.batch_client import BatchClient, ProviderUnreachable
from tui_batch.backends.remote.batch_wire import custom_id, read_line, request_line
from tui_batch.backends.remote.openai_api import Secret
from tui_batch.core.errors import ServerError

from support.batch_api_server import BatchApiServer


def _data(count: int) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return b"".join(request_line(custom_id("job", n, 1), body) for n in range(count))


def _client(server: BatchApiServer, **options) -> BatchClient:
    return BatchClient(server.url, Secret("TUI_BATCH_TEST_KEY"), sleep=lambda s: None, **options)


def _until_ended(client: BatchClient, batch_id: str):
    while not (state := client.retrieve(batch_id)).ended:
        time.sleep(0.05)
    return state


def test_upload_create_poll_read_and_delete():
    with BatchApiServer() as server:
        client = _client(server)
        file_id = client.upload("in.jsonl", _data(12))
        made = client.create_once(file_id, {"job": "job"})
        assert made.status == "validating" and made.input_file_id == file_id
        state = _until_ended(client, made.id)
        assert (state.status, state.total, state.completed) == ("completed", 12, 12)
        answers = [read_line(line) for line in client.lines(state.output_file_id)]
        assert sorted(a.custom_id for a in answers) == sorted(
            custom_id("job", n, 1) for n in range(12)
        )
        assert client.find(file_id).id == made.id
        client.delete(file_id)
        assert server.deleted == [file_id]


def test_transient_faults_are_tried_again():
    with BatchApiServer() as server:
        server.faults["upload"] = deque(["503", "drop"])
        server.faults["get"] = deque(["500", "delay:0.2", "503"])
        client = _client(server)
        made = client.create_once(client.upload("in.jsonl", _data(3)), {})
        assert _until_ended(client, made.id).status == "completed"


def test_a_batch_whose_create_answer_was_lost_is_found_not_made_again():
    with BatchApiServer() as server:
        server.faults["create"] = deque(["lost"])
        client = _client(server)
        file_id = client.upload("in.jsonl", _data(3))
        made = client.create_once(file_id, {})
        assert server.creates[file_id] == 1 and made.input_file_id == file_id
        server.faults["create"] = deque(["drop"])  # never reached it: made on the next try
        other = client.upload("in2.jsonl", _data(2))
        client.create_once(other, {})
        assert server.creates[other] == 1


def test_a_failure_that_stays_is_one_line_without_the_key(monkeypatch):
    monkeypatch.setenv("TUI_BATCH_TEST_KEY", "sk-secret-value-1234")
    with BatchApiServer() as server:
        server.faults["get"] = deque(["503"] * 3)
        client = _client(server, attempts=3)
        with pytest.raises(ProviderUnreachable) as caught:  # worth trying later
            client.retrieve("batch-x")
        text = str(caught.value)
        assert text.startswith(f"Cannot poll a batch at {server.url}: HTTP 503")
        assert "\n" not in text and "sk-secret" not in text
        with pytest.raises(ServerError, match="HTTP 404") as refused:
            client.retrieve("batch-none")
        assert not isinstance(refused.value, ProviderUnreachable)  # not worth it
        with pytest.raises(ServerError, match="Cannot read a result file"):
            list(client.lines("file-none"))
