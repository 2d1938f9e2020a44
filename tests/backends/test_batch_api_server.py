"""The Batch API server the Batch API work is tested against (tests/support/
batch_api_server.py) behaves as the reference says, checked through the real `openai`
client: uploads, the statuses a batch goes through, output in any order matched by
`custom_id`, failures at validation, expiry and cancel with the finished lines kept,
faults on the endpoints; and, forwarding to a real `llama_cpp.server`, real answers."""

from __future__ import annotations

import io
import json
import time
from collections import deque

import openai
import pytest

from support.batch_api_server import ENDPOINT, BatchApiServer
from support.fake_server import start_llama_servers


def _lines(count: int, prefix: str = "q") -> bytes:
    return "".join(
        json.dumps(
            {
                "custom_id": f"{prefix}-{n}",
                "method": "POST",
                "url": ENDPOINT,
                "body": {
                    "model": "smollm2",
                    "messages": [{"role": "user", "content": f"Say the number {n}."}],
                    "max_tokens": 8,
                },
            }
        )
        + "\n"
        for n in range(count)
    ).encode()


def _client(server: BatchApiServer, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="test", max_retries=retries)


def _submit(client: openai.OpenAI, data: bytes):
    uploaded = client.files.create(file=("lines.jsonl", io.BytesIO(data)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=ENDPOINT,
        completion_window="24h",
        metadata={"job": "test"},
    )


def _until_over(client: openai.OpenAI, batch_id: str, timeout: float = 60):
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch, seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def _read(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_goes_through_its_statuses_and_answers_every_line_in_some_order():
    with BatchApiServer(finalizing=0.3) as server:
        client = _client(server)
        created = _submit(client, _lines(30))
        assert created.status == "validating" and created.metadata == {"job": "test"}
        batch, seen = _until_over(client, created.id)
        assert seen[0] == "validating" and seen[-2:] == ["finalizing", "completed"]
        assert batch.request_counts.total == 30 and batch.request_counts.completed == 30
        out = _read(client, batch.output_file_id)
        ids = [line["custom_id"] for line in out]
        assert sorted(ids) == sorted(f"q-{n}" for n in range(30)) and ids != sorted(ids)
        answer = out[0]["response"]
        assert answer["status_code"] == 200 and answer["body"]["choices"][0]["message"]
        assert batch.error_file_id is None
        client.files.delete(created.input_file_id)
        assert server.deleted == [created.input_file_id]
        assert server.creates[created.input_file_id] == 1


def test_a_duplicate_custom_id_or_the_token_quota_fails_the_batch_at_validation():
    with BatchApiServer(token_quota=50) as server:
        client = _client(server)
        duplicated = _lines(2) + _lines(1)  # q-0 twice
        batch, _ = _until_over(client, _submit(client, duplicated).id)
        assert batch.status == "failed"
        codes = {(e.code, e.line) for e in batch.errors.data}
        assert ("duplicate_custom_id", 3) in codes
        batch, _ = _until_over(client, _submit(client, _lines(40, "big")).id)
        assert batch.status == "failed"
        assert "Enqueued token limit reached" in batch.errors.data[0].message


def test_an_expired_batch_keeps_what_it_finished_and_the_rest_are_batch_expired():
    with BatchApiServer(expire_after=1.0, workers=1, line_delay=0.1) as server:
        client = _client(server)
        batch, _ = _until_over(client, _submit(client, _lines(40)).id)
        assert batch.status == "expired"
        done, failed = _read(client, batch.output_file_id), _read(client, batch.error_file_id)
        assert 0 < len(done) < 40 and len(done) + len(failed) == 40
        assert {line["error"]["code"] for line in failed} == {"batch_expired"}
        assert batch.request_counts.completed == len(done)


def test_a_cancelled_batch_keeps_what_it_finished():
    with BatchApiServer(workers=1, line_delay=0.05) as server:
        client = _client(server)
        created = _submit(client, _lines(200))
        while client.batches.retrieve(created.id).request_counts.completed < 3:
            time.sleep(0.05)
        assert client.batches.cancel(created.id).status == "cancelling"
        batch, _ = _until_over(client, created.id)
        assert batch.status == "cancelled"
        assert 3 <= len(_read(client, batch.output_file_id)) < 200


def test_faults_on_the_endpoints_and_failed_lines():
    with BatchApiServer() as server:
        client = _client(server)
        server.faults["upload"] = deque(["503"])
        with pytest.raises(openai.InternalServerError):
            _submit(client, _lines(2))
        server.faults["create"] = deque(["drop"])
        with pytest.raises(openai.APIConnectionError):
            _submit(client, _lines(2))
        server.line_errors["q-1"] = 500
        batch, _ = _until_over(_client(server, retries=2), _submit(client, _lines(3)).id)
        failed = _read(client, batch.error_file_id)
        assert [line["custom_id"] for line in failed] == ["q-1"]
        assert failed[0]["response"]["status_code"] == 500
        assert batch.request_counts.completed == 2 and batch.request_counts.failed == 1


@pytest.mark.model
def test_lines_are_answered_by_a_real_llama_cpp_server(demo_model):
    started = start_llama_servers(str(demo_model), 1)
    try:
        with BatchApiServer(upstream=started[0][0]) as server:
            client = _client(server)
            batch, _ = _until_over(client, _submit(client, _lines(2)).id, 120)
            out = _read(client, batch.output_file_id)
    finally:
        started[0][1].kill()
    assert batch.status == "completed" and len(out) == 2
    for line in out:
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"].strip()
        assert body["usage"]["completion_tokens"] > 0
