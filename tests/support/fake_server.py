"""An OpenAI-compatible chat server of our own (aiohttp), for tests and benchmarks.

It answers at once with an echo of the prompt, or injects the faults a test scripts:
429 with Retry-After / retry-after-ms / an HTTP date, 503, 500, 400, a delay, a stream
that stalls or drops mid-way, malformed JSON, no usage. It records, from its own side,
every request's arrival time and the peak number of requests in flight, so a test can
check caps, rates and Retry-After where they matter: at the server.

In a test: `with FakeServer() as server:` (a thread of the test process). As a process
(benchmarks, kill -9 tests): `python tests/support/fake_server.py --port P [--delay S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

from aiohttp import web

if __package__ in (None, ""):  # run as a script: its folder is on the path, not `tests`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support.loop_server import LoopServer  # noqa: E402 - see above

MODEL = "fake-model"


class FakeServer(LoopServer):
    """Listens on 127.0.0.1:`port` (0: any free port) once started."""

    def __init__(
        self, port: int = 0, model: str = MODEL, key: str | None = None, delay: float = 0.0
    ) -> None:
        self.port, self.model, self.key, self.delay = port, model, key, delay
        # Faults for the next requests, in order: "429", "429:S", "429ms:MS", "429date:S",
        # "503", "500", "400", "delay:S", "stall", "drop", "malformed", "nousage", "ok",
        # and answers that are no whole answer or are odd: "nofinish" (a stream that ends
        # with [DONE] and no finish reason, as an interrupted llama-cpp-python server's),
        # "cut" (a stream cut before its finish reason), "jsonbody" (a JSON body to a
        # stream request), "nochoices" (chunks without choices), "hugeusage" (a usage of
        # 2**64), "surrogate" (a lone surrogate in the answer), "echo" (an error body
        # echoing the key near its 300th character), "redirect:URL" (307 to URL); and
        # answers of our choosing: "say:TEXT" (TEXT, finished), "cutoff:TEXT" (TEXT, cut
        # off at max tokens); and a model that thinks: "think:THOUGHT|ANSWER" (a thought,
        # then the answer), "thinkcut:THOUGHT" (a thought cut off at max tokens, no
        # answer), "stray:THOUGHT|ANSWER" (the answer starts with a stray close tag),
        # sent in `thought_form`.
        self.script: deque[str] = deque()
        # Where a thought goes, as servers send it: a field of the message and delta
        # ("reasoning": vLLM, Ollama's /v1; "reasoning_content": llama-server, DeepSeek;
        # "thinking": Ollama's native; "reasoning_details": OpenRouter's list), or
        # "inline": `<think>…</think>` in the content.
        self.thought_form = "reasoning"
        # What unscripted requests answer (finished), instead of "w0 w1 ...": a server
        # that ignores schemas answers the same whatever it is asked.
        self.reply: str | None = None
        self.bodies: list[dict] = []  # every chat request's body, as sent
        # Answer 400 to a request asking for structured output (a server without it).
        self.refuse_schemas = False
        # Answer 400 to a request with any of these fields, as OpenAI's API does to the
        # fields it does not know ("Unrecognized request argument supplied").
        self.refuse_fields: set[str] = set()
        # Answer GET /models with 307 to this address (a server sending its clients away).
        self.models_redirect: str | None = None
        self.words = 8  # chunks in each answer
        self.arrivals: list[float] = []
        self.finished = 0
        self.in_flight = 0
        self.peak = 0
        self.cancelled = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    def _authorised(self, request: web.Request) -> web.Response | None:
        if self.key is None:
            return None
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if sent == self.key:
            return None
        # Like a hosted API, it echoes the key it was sent: the client must not keep it.
        body = {"error": {"message": f"Incorrect API key provided: {sent}", "code": "bad_key"}}
        return web.json_response(body, status=401)

    async def _models(self, request: web.Request) -> web.Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        if self.models_redirect is not None:
            raise web.HTTPTemporaryRedirect(self.models_redirect)
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "me"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self._answer(request)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
            self.finished += 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.bodies.append(body)
        fault = self.script.popleft() if self.script else "ok"
        kind, _, arg = fault.partition(":")
        text = str(body["messages"][-1].get("content", ""))
        if "BAD_REQUEST" in text:
            kind = "400"
        if self.refuse_schemas and ("response_format" in body or "structured_outputs" in body):
            kind = "400"
        if self.refuse_fields & set(body):
            unknown = sorted(self.refuse_fields & set(body))[0]
            message = f"Unrecognized request argument supplied: {unknown}"
            return web.json_response({"error": {"message": message}}, status=400)
        if kind == "redirect":
            raise web.HTTPTemporaryRedirect(arg)
        if kind == "echo":
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            message = "x" * 290 + f" key {sent} was used"
            return web.json_response({"error": {"message": message}}, status=400)
        if self.delay:
            await asyncio.sleep(self.delay)
        if kind == "delay":
            await asyncio.sleep(float(arg))
        elif kind in ("429", "429ms", "429date", "503", "500", "400"):
            status = int(kind[:3])
            headers = {}
            if kind == "429" and arg:
                headers["Retry-After"] = arg
            elif kind == "429ms":
                headers["retry-after-ms"] = arg
            elif kind == "429date":
                headers["Retry-After"] = formatdate(time.time() + float(arg), usegmt=True)
            message = "context too long" if status == 400 else f"fault {status}"
            return web.json_response(
                {"error": {"message": message, "type": "fault"}}, status=status, headers=headers
            )
        words = [f"w{i}" for i in range(self.words)]
        reason = "length"
        if kind in ("say", "cutoff") or (kind == "ok" and self.reply is not None):
            words = [arg if kind != "ok" else str(self.reply)]
            reason = "stop" if kind != "cutoff" else "length"
        thought = ""
        if kind in ("think", "thinkcut", "stray"):
            thought, _, said = arg.partition("|")
            words = said.split() if kind != "thinkcut" else []
            reason = "length" if kind == "thinkcut" else "stop"
            if kind == "stray":
                words = ["</think>", *words]
            if self.thought_form == "inline":
                close = "" if kind == "thinkcut" else "</think>"
                words = [f"<think>{thought}{close}", *words]
                thought = ""
        usage = {
            "prompt_tokens": len(text.split()),
            "completion_tokens": len(words) + len(thought.split()),
            "total_tokens": len(text.split()) + len(words) + len(thought.split()),
        }
        if thought:
            usage["completion_tokens_details"] = {"reasoning_tokens": len(thought.split())}
        if kind == "hugeusage":
            usage["completion_tokens"] = 2**64
        if kind == "surrogate":
            words[1] = "\ud800"
        if not body.get("stream") or kind == "jsonbody":
            if kind == "malformed":
                return web.Response(
                    text='{"id": "x", "choices": [', content_type="application/json"
                )
            answer = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": " ".join(words),
                            **self._thought(thought),
                        },
                        "finish_reason": reason,
                    }
                ],
            }
            if kind != "nousage":
                answer["usage"] = usage
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, word in enumerate(thought.split()):
            chunk = _chunk(self.model, self._thought(word if i == 0 else f" {word}"), None)
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        for i, word in enumerate(words):
            if kind == "malformed" and i == 1:
                await response.write(b"data: {this is not json\n\n")
            content = word if i == 0 else f" {word}"
            chunk = _chunk(self.model, {"content": content}, None)
            if kind == "nochoices":
                del chunk["choices"]
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if i == 1 and kind == "cut":
                await response.write_eof()
                return response
            if i == 1 and kind == "stall":
                await asyncio.sleep(3600)
            if i == 1 and kind == "drop":
                assert request.transport is not None
                request.transport.abort()
                return response
        if kind not in ("nofinish", "nochoices"):
            finish = _chunk(self.model, {}, reason)
            await response.write(f"data: {json.dumps(finish)}\n\n".encode())
        if kind != "nousage" and (body.get("stream_options") or {}).get("include_usage"):
            last = _chunk(self.model, {}, None)
            last["choices"] = []
            last["usage"] = usage
            await response.write(f"data: {json.dumps(last)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _thought(self, text: str) -> dict:
        """A thought (or a piece of one) as the message's or delta's fields."""
        if not text or self.thought_form == "inline":
            return {}
        if self.thought_form == "reasoning_details":
            return {"reasoning_details": [{"type": "reasoning.text", "text": text}]}
        return {self.thought_form: text}


def _chunk(model: str, delta: dict, finish: str | None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def free_port() -> int:
    """A port nothing listens on now (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_models(url: str, process: subprocess.Popen[bytes], seconds: float = 120) -> None:
    """Wait until the server at `url` (a process we started) answers `GET /models`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"server at {url} did not start in {seconds}s")


def start_llama_servers(
    model: str,
    count: int,
    alias: str = "smollm2",
    interrupt: bool = False,
    logs: Path | None = None,
    program: Callable[[int], list[str]] | None = None,
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """`count` real `python -m llama_cpp.server` on loopback (1 thread, one request at a
        time, never cut off unless `interrupt`: then as its default, where a new request
        cuts off the answer streaming), each answering; the caller kills them. With `logs`,
        server N's log (its access log: one line a request) is `logs/server-N.log`. `program(N)`:
    what runs server N, given the server's flags (`python -m llama_cpp.server` unless
    told; `logged_llama_server` logs each request from the server's side)."""
    started = []
    try:
        for number in range(count):
            port = free_port()
            runs = program(number) if program else [sys.executable, "-m", "llama_cpp.server"]
            command = [
                *runs, "--model", model,
                "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", "2048", "--n_threads", "1",
                "--interrupt_requests", str(interrupt),
            ]  # fmt: skip
            log = subprocess.DEVNULL
            if logs is not None:
                log = open(logs / f"server-{number}.log", "wb")  # noqa: SIM115 - the server's
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            started.append((f"http://127.0.0.1:{port}/v1", process))
        for url, process in started:
            wait_for_models(url, process)
    except BaseException:
        for _, process in started:
            process.kill()
        raise
    return started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--words", type=int, default=8, help="chunks in each answer")
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()
    server = FakeServer(args.port, args.model, delay=args.delay)
    server.words = args.words
    web.run_app(
        server.app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
