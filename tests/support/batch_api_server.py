"""A Batch API server of our own (aiohttp, 127.0.0.1), in the OpenAI wire format, for
the tests and benchmarks of provider Batch APIs (`../shared/reference/scale-queue-batch.md`
§1): no provider is reachable from here and no open server implements the endpoints.

- `POST /v1/files` (multipart: `purpose`, `file`), `GET /v1/files/{id}`,
  `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`;
- `POST /v1/batches`, `GET /v1/batches/{id}`, `GET /v1/batches`,
  `POST /v1/batches/{id}/cancel`.

A batch goes validating -> in_progress -> finalizing -> completed, as the reference says:
`failed` at validation with `errors.data` (a line that is not JSON or not a chat request,
a duplicate `custom_id`, too many lines, or more enqueued tokens than `token_quota`);
`expired` once `expire_after` seconds have passed, the finished lines kept and the rest
`batch_expired`; cancelling -> cancelled, the finished lines kept. Each line is answered
by forwarding its body to `upstream` (a real `llama_cpp.server`), or, without one, with
an echo at once; the output and error files list the lines in a shuffled order.

Faults a test scripts: `faults[name]`, a queue of "500", "503", "drop" (the connection
closed with no answer), "lost" (the request done, then the connection closed with no
answer), "delay:S" (S seconds, then the request) or "hold:S" (the request, then S
seconds before its answer) for the next requests to an endpoint (names:
upload, file, content, delete, create, get, list, cancel); `line_errors[custom_id]`, an
HTTP status a line answers with. `GET /_test/stats` says what the server saw (creates by
input file, lines answered, files deleted) for a test in another process.

In a test: `with BatchApiServer(upstream=url) as server:` (a thread of the test process).
As a process (kill -9 tests, benchmarks):
`python tests/support/batch_api_server.py --port P [--upstream URL] [--expire-after S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

if __package__ in (None, ""):  # run as a script: its folder is on the path, not `tests`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support.loop_server import LoopServer  # noqa: E402 - see above

ENDPOINT = "/v1/chat/completions"
_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):06d}{random.getrandbits(24):06x}"


@dataclass
class _Batch:
    id: str
    input_file_id: str
    metadata: dict[str, str]
    created_at: int
    expires_at: int
    deadline: float  # when it expires, to the fraction of a second
    status: str = "validating"
    errors: list[dict[str, Any]] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, int] = field(default_factory=dict)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            **{f"{name}_at": at for name, at in self.times.items()},
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


class BatchApiServer(LoopServer):
    """Listens on 127.0.0.1:`port` (0: any free port) once started (see the module doc)."""

    def __init__(
        self,
        port: int = 0,
        upstream: str | None = None,
        folder: Path | None = None,
        *,
        expire_after: float = 24 * 3600,
        validating: float = 0.2,
        finalizing: float = 0.2,
        workers: int = 2,
        line_delay: float = 0.0,
        max_lines: int = 50_000,
        token_quota: int | None = None,
        seed: int = 0,
    ) -> None:
        self.port, self.upstream = port, upstream
        self._own_folder = None if folder is not None else tempfile.TemporaryDirectory()
        self.folder = folder or Path(self._own_folder.name)  # type: ignore[union-attr]
        self.expire_after, self.validating, self.finalizing = expire_after, validating, finalizing
        self.workers, self.max_lines, self.token_quota = workers, max_lines, token_quota
        self.line_delay = line_delay  # seconds each line takes to answer (an echo's too)
        self.random = random.Random(seed)
        self.faults: dict[str, deque[str]] = {}
        self.line_errors: dict[str, int] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, _Batch] = {}
        self.creates: Counter[str] = Counter()  # input file id -> batches created on it
        self.answered = 0  # lines answered, over every batch
        self.answers: Counter[str] = Counter()  # custom id -> times answered
        self.calls: Counter[str] = Counter()  # endpoint name -> requests to it
        self.deleted: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 2**20)
        routes = [
            ("POST", "/v1/files", "upload", self._upload),
            ("GET", "/v1/files/{id}", "file", self._file),
            ("GET", "/v1/files/{id}/content", "content", self._content),
            ("DELETE", "/v1/files/{id}", "delete", self._delete),
            ("POST", "/v1/batches", "create", self._create),
            ("GET", "/v1/batches", "list", self._list),
            ("GET", "/v1/batches/{id}", "get", self._get),
            ("POST", "/v1/batches/{id}/cancel", "cancel", self._cancel),
        ]
        for method, path, name, handler in routes:
            app.router.add_route(method, path, self._faulty(name, handler))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_test/stats", self._stats)
        return app

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        if self._own_folder is not None:
            self._own_folder.cleanup()

    async def _stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await super()._stop()

    def _faulty(self, name: str, handler: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.calls[name] += 1
            script = self.faults.get(name)
            fault = script.popleft() if script else None
            if fault is not None and fault.startswith("delay:"):
                await asyncio.sleep(float(fault.split(":", 1)[1]))
            elif fault is not None and fault.startswith("hold:"):  # done, then answered late
                answer = await handler(request)
                await asyncio.sleep(float(fault.split(":", 1)[1]))
                return answer
            elif fault in ("500", "503"):
                return _error(int(fault), "server_error", f"injected {fault}")
            elif fault in ("drop", "lost"):
                if fault == "lost":  # done, and the answer lost on its way back
                    await handler(request)
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            return await handler(request)

        return handle

    # -- files --------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if not hasattr(upload, "file"):
            return _error(400, "invalid_request_error", "no file in the form")
        file_id = _new_id("file")
        path = self.folder / file_id
        path.write_bytes(upload.file.read())  # type: ignore[union-attr]
        return web.json_response(
            self._add_file(file_id, path, upload.filename, str(form.get("purpose", "")))  # type: ignore[union-attr]
        )

    def _add_file(self, file_id: str, path: Path, name: str, purpose: str) -> dict[str, Any]:
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": path.stat().st_size,
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
        }
        return self.files[file_id]

    async def _file(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["id"])
        return web.json_response(found) if found else _missing("file")

    async def _content(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return _missing("file")
        return web.FileResponse(self.folder / file_id)

    async def _delete(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if self.files.pop(file_id, None) is None:
            return _missing("file")
        (self.folder / file_id).unlink(missing_ok=True)
        self.deleted.append(file_id)
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    # -- batches ------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return _missing("file")
        if body.get("endpoint") != ENDPOINT:
            return _error(400, "invalid_request_error", f"endpoint must be {ENDPOINT}")
        self.creates[file_id] += 1
        now = int(time.time())
        batch = _Batch(
            _new_id("batch"),
            file_id,
            dict(body.get("metadata") or {}),
            now,
            now + int(self.expire_after),
            time.time() + self.expire_after,
        )
        self.batches[batch.id] = batch
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(batch.to_dict())

    async def _get(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        return web.json_response(batch.to_dict()) if batch else _missing("batch")

    async def _list(self, request: web.Request) -> web.Response:
        data = [batch.to_dict() for batch in reversed(self.batches.values())]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _missing("batch")
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch.status = "cancelling"
            batch.times["cancelling"] = int(time.time())
            batch.cancel.set()
        return web.json_response(batch.to_dict())

    async def _models(self, request: web.Request) -> web.Response:
        """The upstream server's models; an echo lists none (as some providers)."""
        if self.upstream is None:
            return _missing("models")
        async with (
            ClientSession(timeout=ClientTimeout(total=30)) as session,
            session.get(f"{self.upstream}/models") as answer,
        ):
            return web.json_response(await answer.json(content_type=None), status=answer.status)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "creates": dict(self.creates),
                "answered": self.answered,
                "answers": dict(self.answers),
                "calls": dict(self.calls),
                "deleted": self.deleted,
                "batches": {b.id: b.status for b in self.batches.values()},
            }
        )

    async def _run(self, batch: _Batch) -> None:
        """A batch's life, from validating to its end (see the module doc)."""
        await asyncio.sleep(self.validating)
        lines, errors = self._validate(batch)
        if errors:
            batch.status, batch.errors = "failed", errors
            batch.times["failed"] = int(time.time())
            return
        if batch.cancel.is_set():
            return self._end(batch, "cancelled", [], lines)
        batch.status, batch.total = "in_progress", len(lines)
        batch.times["in_progress"] = int(time.time())
        done: list[dict[str, Any]] = []
        waiting = deque(lines)
        deadline = batch.deadline

        async def work() -> None:
            while waiting and not batch.cancel.is_set() and time.time() < deadline:
                line = waiting.popleft()
                done.append(await self._answer(line))
                if done[-1]["error"] is None and done[-1]["response"]["status_code"] == 200:
                    batch.completed += 1
                else:
                    batch.failed += 1

        runners = [asyncio.create_task(work()) for _ in range(self.workers)]
        expiry = asyncio.create_task(asyncio.sleep(max(0.0, deadline - time.time())))
        cancelled = asyncio.create_task(batch.cancel.wait())
        await asyncio.wait(
            [asyncio.gather(*runners), expiry, cancelled], return_when=asyncio.FIRST_COMPLETED
        )
        for task in (expiry, cancelled):
            task.cancel()
        await asyncio.gather(*runners)  # each finishes the line it answers
        if batch.cancel.is_set():
            return self._end(batch, "cancelled", done, list(waiting))
        if waiting:
            return self._end(batch, "expired", done, list(waiting))
        batch.status = "finalizing"
        batch.times["finalizing"] = int(time.time())
        await asyncio.sleep(self.finalizing)
        self._end(batch, "completed", done, [])

    def _validate(self, batch: _Batch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines, errors, seen = [], [], set()
        text = (self.folder / batch.input_file_id).read_text(encoding="utf-8")
        enqueued = 0
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                custom_id, body = line["custom_id"], line["body"]
                if line.get("url") != ENDPOINT or line.get("method") != "POST":
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                errors.append(_line_error("invalid_request", "not a chat request line", number))
                continue
            if custom_id in seen:
                errors.append(
                    _line_error(
                        "duplicate_custom_id",
                        f"The custom_id {custom_id} is not unique in this file",
                        number,
                    )
                )
            seen.add(custom_id)
            enqueued += len(json.dumps(body.get("messages", ""))) // 4 + body.get("max_tokens", 0)
            lines.append(line)
        if len(lines) > self.max_lines:
            errors.append(
                _line_error("too_many_requests", f"more than {self.max_lines} requests", None)
            )
        if self.token_quota is not None and enqueued > self.token_quota:
            errors.append(
                _line_error(
                    "token_limit_exceeded",
                    f"Enqueued token limit reached. Limit: {self.token_quota:,} enqueued "
                    "tokens. Please try again once some in_progress batches have been completed.",
                    None,
                )
            )
        return lines, errors

    async def _answer(self, line: dict[str, Any]) -> dict[str, Any]:
        custom_id = line["custom_id"]
        request_id = _new_id("req")
        if self.line_delay:
            await asyncio.sleep(self.line_delay)
        status = self.line_errors.get(custom_id)
        if status is None and self.upstream is not None:
            status, body = await self._forward(line["body"])
        elif status is None:
            status, body = 200, _echo(line["body"])
        else:
            body = {"error": {"message": f"injected {status}", "type": "server_error"}}
        self.answered += 1
        self.answers[custom_id] += 1
        return {
            "id": _new_id("batch_req"),
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
        }

    async def _forward(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        sent = {**body, "stream": False}
        timeout = ClientTimeout(total=600)
        async with (
            ClientSession(timeout=timeout) as session,
            session.post(f"{self.upstream}/chat/completions", json=sent) as answer,
        ):
            return answer.status, await answer.json(content_type=None)

    def _end(
        self,
        batch: _Batch,
        status: str,
        done: list[dict[str, Any]],
        left: list[dict[str, Any]],
    ) -> None:
        """Write the output and error files (shuffled) and end the batch as `status`;
        the lines `left` unanswered are `batch_expired` errors of an expired batch."""
        unfinished = [  # an expired batch's; a cancelled one's are left out
            {
                "id": _new_id("batch_req"),
                "custom_id": line["custom_id"],
                "response": None,
                "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the "
                    "completion window expired.",
                },
            }
            for line in (left if status == "expired" else [])
        ]
        ok = [line for line in done if line["response"]["status_code"] == 200]
        bad = [line for line in done if line["response"]["status_code"] != 200] + unfinished
        batch.failed += len(unfinished) if status == "expired" else 0
        for lines, attribute in ((ok, "output_file_id"), (bad, "error_file_id")):
            if not lines:
                continue
            self.random.shuffle(lines)
            file_id = _new_id("file")
            path = self.folder / file_id
            path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
            self._add_file(file_id, path, f"{batch.id}_{attribute[:-8]}.jsonl", "batch_output")
            setattr(batch, attribute, file_id)
        batch.status = status
        batch.times[status] = int(time.time())


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """An answer at once: the last message's text, said back (`say:TEXT`: TEXT as it is)."""
    messages = body.get("messages") or [{}]
    said = str(messages[-1].get("content", ""))
    text = said[4:] if said.startswith("say:") else f"echo: {said}"
    words = len(text.split())
    return {
        "id": _new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "echo"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": words, "completion_tokens": words, "total_tokens": 2 * words},
    }


def _line_error(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


def _missing(what: str) -> web.Response:
    return _error(404, "invalid_request_error", f"No such {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", help="a chat server's base URL (default: echo)")
    parser.add_argument("--expire-after", type=float, default=24 * 3600)
    parser.add_argument("--validating", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--line-delay", type=float, default=0.0)
    parser.add_argument("--max-lines", type=int, default=50_000)
    parser.add_argument("--token-quota", type=int)
    parser.add_argument("--folder", type=Path, help="where files are kept (default: a temp one)")
    args = parser.parse_args()
    server = BatchApiServer(
        args.port,
        args.upstream,
        args.folder,
        expire_after=args.expire_after,
        validating=args.validating,
        workers=args.workers,
        line_delay=args.line_delay,
        max_lines=args.max_lines,
        token_quota=args.token_quota,
    )
    web.run_app(server.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
