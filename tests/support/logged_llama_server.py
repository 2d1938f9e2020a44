"""`python -m llama_cpp.server` with an access log of its own side: every chat request's
start and end, with the time and how many were in flight at that server then.

    python tests/support/logged_llama_server.py LOG --model M --port P ...   (the server's flags)

Each line of LOG: `<unix time> start|end <in flight after it> <request id> <the last
message's first 40 characters, JSON>`. A benchmark reads the logs of a fleet's servers
to check, from the servers' side, that the jobs together kept the fleet's
`--concurrency` and `--rpm` (the prompt tells a job's requests from the checks
`tui-batch` sends before a job starts)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: its folder is on the path, not `tests`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support.fake_server import start_llama_servers  # noqa: E402 - see above


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


def start_logged_servers(
    model: str, logs: list[Path], alias: str = "smollm2"
) -> list[tuple[str, subprocess.Popen]]:
    """A logged `llama_cpp.server` a log file (1 thread, one request at a time, never cut
    off), each answering; the caller kills them."""
    return start_llama_servers(
        model, len(logs), alias, program=lambda n: [sys.executable, __file__, str(logs[n])]
    )


def fleet_events(
    logs: list[Path], prefix: str, since: float = 0.0, until: float = float("inf")
) -> list[tuple[float, int]]:
    """The requests whose prompt starts with `prefix` (a job's, not the checks
    `tui-batch` sends before a job starts) starting (+1) and ending (-1) at any server of
    the fleet between `since` and `until`, in time order, from every server's log."""
    moments = []
    for log in logs:
        for line in log.read_text().splitlines():
            stamp, what, _, _, prompt = line.split(" ", 4)
            if since <= float(stamp) <= until and json.loads(prompt).startswith(prefix):
                moments.append((float(stamp), 1 if what == "start" else -1))
    return sorted(moments, key=lambda m: (m[0], m[1]))  # an end before a start at a tie


def most_in_flight(moments: list[tuple[float, int]]) -> int:
    """The most requests in flight at once at the fleet."""
    now = most = 0
    for _, change in moments:
        now += change
        most = max(most, now)
    return most


def most_started_in(moments: list[tuple[float, int]], window: float) -> int:
    """The most requests started in any `window` seconds."""
    starts = [stamp for stamp, change in moments if change > 0]
    most, first = 0, 0
    for last, stamp in enumerate(starts):
        while stamp - starts[first] > window:
            first += 1
        most = max(most, last - first + 1)
    return most


def main() -> None:
    import uvicorn
    from llama_cpp.server import __main__ as server_main

    log = sys.argv.pop(1)
    run = uvicorn.run

    def logged_run(app: Any, **kwargs: Any) -> None:
        run(AccessLog(app, log), **kwargs)

    server_main.uvicorn.run = logged_run
    server_main.main()


if __name__ == "__main__":
    main()
