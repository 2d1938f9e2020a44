"""`python -m llama_cpp.server` with an access log of its own side: every chat request's
start and end, with the time and how many were in flight at that server then.

    python benchmarks/logged_llama_server.py LOG --model M --port P ...   (the server's flags)

Each line of LOG: `<unix time> start|end <in flight after it> <request id> <the last
message's first 40 characters, JSON>`. A benchmark reads the logs of a fleet's servers
to check, from the servers' side, that the jobs together kept the fleet's
`--concurrency` and `--rpm` (the prompt tells a job's requests from the checks
`tui-batch` sends before a job starts)."""

from __future__ import annotations

import itertools
import json
import sys
import time
from typing import Any

import uvicorn
from llama_cpp.server import __main__ as server_main


class AccessLog:
    """An ASGI middleware: a line at each chat request's start and end."""

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.log = open(path, "a", buffering=1)  # noqa: SIM115 - for the server's life
        self.in_flight = 0
        self.numbers = itertools.count()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        started = time.time()
        messages = [await receive()]
        while messages[-1].get("more_body"):
            messages.append(await receive())
        body = b"".join(m.get("body", b"") for m in messages)
        try:
            prompt = str(json.loads(body)["messages"][-1]["content"])[:40]
        except (ValueError, KeyError, IndexError, TypeError):
            prompt = ""
        said = iter(messages)

        async def replay() -> dict:
            return next(said, None) or await receive()

        number = next(self.numbers)
        self.in_flight += 1
        self.log.write(f"{started:.4f} start {self.in_flight} {number} {json.dumps(prompt)}\n")
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.in_flight -= 1
                self.log.write(
                    f"{time.time():.4f} end {self.in_flight} {number} {json.dumps(prompt)}\n"
                )

        async def sending(message: dict) -> None:
            await send(message)
            # The answer's last byte is sent: the request is over for its client, though
            # the app may take a moment more to return.
            if message["type"] == "http.response.body" and not message.get("more_body"):
                end()

        try:
            await self.app(scope, replay, sending)
        finally:
            end()


def main() -> None:
    log = sys.argv.pop(1)
    run = uvicorn.run

    def logged_run(app: Any, **kwargs: Any) -> None:
        run(AccessLog(app, log), **kwargs)

    server_main.uvicorn.run = logged_run
    server_main.main()


if __name__ == "__main__":
    main()
