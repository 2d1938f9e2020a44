"""A job through a provider's Batch API, against the test Batch API server on loopback
(`tests/support/batch_api_server.py` in its own process, each line echoed at once: the
figures are tui-batch's, not a model's).

1. Size: `tui-batch run --batch-api` of 60,001 prompts (files of at most 50,000 lines:
   2 files, 2 batches), every answer stored; the same of 6,001 prompts. Prints the
   files and creates the server counted, the answers stored, both runs' peak RSS and
   their ratio, and the ingest of the 50,000-line output file: lines/s read by the
   backend alone (streamed, parsed, matched by custom_id), and end to end (from the
   first answer of that file stored to its last, checked and committed by the engine).
2. Crashes: a job of 3,000 prompts in files of 500, its lines answered slowly enough to
   last a while, killed with SIGKILL at 10 random points between its first upload and
   its last answer stored (each run resumed, then killed again), then resumed to its
   end. Prints the kill points, the creates per file and the answers per prompt the
   server counted (each must be exactly 1), and the results stored.

    python benchmarks/batch_api.py                 # both
    python benchmarks/batch_api.py --skip-crashes  # only 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "tests" / "support" / "batch_api_server.py"
QUICK = ["--model", "echo", "--max-tokens", "8", "--batch-poll", "0.2", "--batch-poll-most", "1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The test Batch API server in its own process."""

    def __init__(self, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", str(self.port), *options],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the Batch API server did not start")

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_test/stats") as answer:
            return json.load(answer)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def environment(data: Path) -> dict[str, str]:
    return {**os.environ, "TUI_BATCH_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}


def run_cli(data: Path, *args: str) -> tuple[int, float, int, str]:
    """`tui-batch ARGS`: exit status, seconds, peak RSS (KiB), stderr."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "tui_batch", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=environment(data),
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return process.returncode, time.perf_counter() - started, usage.ru_maxrss, err.read()


def only_checkpoint(data: Path) -> Path:
    (path,) = (data / "checkpoints").glob("batch_*.db")
    return path


def prompts_file(folder: Path, count: int) -> Path:
    path = folder / f"prompts-{count}.txt"
    path.write_text("".join(f"Prompt number {i}: say it back.\n" for i in range(count)))
    return path


def size(folder: Path) -> None:
    print("1. Size: 60,001 prompts against 6,001, files of at most 50,000 lines")
    server = Server("--validating", "0.1")
    try:
        figures = {}
        for count in (6_001, 60_001):
            data = folder / f"data-{count}"
            before = server.stats()
            code, seconds, rss, said = run_cli(
                data, "run", str(prompts_file(folder, count)), "--server", server.url,
                "--batch-api", *QUICK,
            )  # fmt: skip
            assert code == 0, said[-2000:]
            after = server.stats()
            creates = sum(after["creates"].values()) - sum(before["creates"].values())
            path = only_checkpoint(data)
            with sqlite3.connect(path) as connection:
                stored = connection.execute(
                    "SELECT COUNT(*) FROM results WHERE success = 1"
                ).fetchone()[0]
                files = connection.execute(
                    "SELECT number, lines FROM batch_files ORDER BY number"
                ).fetchall()
            figures[count] = rss
            print(
                f"   {count:>6,} prompts: files of {', '.join(f'{n:,}' for _, n in files)} lines, "
                f"{creates} batches created, {stored:,} answers stored, {seconds:.1f}s, "
                f"peak RSS {rss / 1024:.0f} MiB"
            )
        print(f"   peak RSS 60,001 / 6,001: {figures[60_001] / figures[6_001]:.2f}x")
        ingest(server)
    finally:
        server.stop()


def ingest(server: Server, repeats: int = 3) -> None:
    """The read of a 50,000-line output file: a batch made and ended at the provider,
    recorded in a job's checkpoint as created (as a run killed while it ran leaves it).
    (a) The backend alone: it reattaches, polls it and reads its output file, each line
    parsed, checked and matched to its prompt, handed back as completions. (b) End to
    end: the job resumed by the engine, from the poll that finds the batch ended to its
    last answer checked, read back to its prompt and stored (the engine's start, which
    reads the job's pending prompts, left out). Each `repeats` times: the median."""
    sys.path.insert(0, str(REPO))
    from tui_batch.backends.remote.batch_backend import BatchApiBackend
    from tui_batch.core.backend import Task
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.core.servers import ServerSettings, parse_endpoint

    class Timed(BatchApiBackend):
        """Says when the engine first steps it: the poll that finds the batch ended."""

        first_step: float | None = None

        def step(self) -> list:
            if self.first_step is None:
                self.first_step = time.perf_counter()
            return super().step()

    count = 50_000
    settings = ServerSettings((parse_endpoint(server.url),), batch_api=True)
    alone, whole = [], []
    with tempfile.TemporaryDirectory() as folder:
        processor = BatchProcessor(Path(folder))
        for _ in range(repeats):
            job = ended_batch(processor, settings, count)
            backend = BatchApiBackend(settings, "echo")
            backend.begin(job)
            for index in range(count):
                backend.submit(Task(index, job.prompts[index]))
            started = time.perf_counter()
            found = []
            while len(found) < count:  # a step reads INGEST_CHUNK lines
                found += backend.step()
            alone.append(time.perf_counter() - started)
            backend.close()
            assert all(c.success for c in found)

            job = processor.open_job(ended_batch(processor, settings, count).job_id)
            timed = Timed(settings, "echo")
            results = processor.process_batch(job, timed)
            assert timed.first_step is not None
            whole.append(time.perf_counter() - timed.first_step)
            timed.close()
            assert len(results) == count and all(r.success for r in results)
    for name, seconds in (("by the backend alone", alone), ("end to end", whole)):
        median = statistics.median(seconds)
        runs = ", ".join(f"{s:.2f}s" for s in seconds)
        print(
            f"   ingest of a 50,000-line output file, {name}: {count / median:,.0f} lines/s "
            f"(median of {runs})"
        )


def ended_batch(processor, settings, count: int):  # noqa: ANN001, ANN201 - a bench helper
    """A job of `count` prompts whose one batch is made and has ended at the provider,
    recorded in its checkpoint as created (as a run killed while it ran leaves it)."""
    from tui_batch.backends.remote.batch_client import BatchClient
    from tui_batch.backends.remote.batch_wire import custom_id, request_line
    from tui_batch.backends.remote.openai_api import Secret
    from tui_batch.core.batch_records import BatchRecords

    texts = [f"Prompt number {i}: say it back." for i in range(count)]
    job = processor.create_job("echo", texts, server=settings)
    ids = [custom_id(job.job_id, i, 1) for i in range(count)]
    lines = b"".join(
        request_line(line, {"model": "echo", "messages": [{"role": "user", "content": text}]})
        for line, text in zip(ids, texts, strict=True)
    )
    client = BatchClient(settings.endpoints[0].url, Secret("OPENAI_API_KEY"))
    file_id = client.upload("bench.jsonl", lines)
    batch = client.create_once(file_id, {})
    while not client.retrieve(batch.id).ended:
        time.sleep(0.2)
    client.close()
    records = BatchRecords(job.checkpoint_file)
    records.written(1, zip(ids, range(count), strict=True))
    records.uploaded(1, file_id)
    records.creating(1)
    records.created(1, batch.id)
    return job


def crashes(folder: Path, kills: int, seed: int) -> None:
    print(f"2. Crashes: kill -9 at {kills} random points, then resume to the end")
    count = 3_000
    server = Server("--validating", "0.3", "--line-delay", "0.02", "--workers", "2")
    try:
        # The job's span from its first upload to its end, run once unharmed.
        reference, _ = start_job(folder, "reference", server, count)
        started = first_upload(server)
        code = reference.wait()
        span = time.monotonic() - started
        assert code == 0
        # The points: at random in that span, each after the job's first upload; at
        # each the run is killed and at once resumed.
        rng = random.Random(seed)
        points = sorted(rng.uniform(0.0, span) for _ in range(kills))
        before = server.stats()
        process, data = start_job(folder, "killed", server, count)
        started = first_upload(server, before)
        said = []
        for point in points:
            time.sleep(max(0.0, started + point - time.monotonic()))
            if process.poll() is not None:
                said.append(f"{point:.1f}s: the run had ended")
                break
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            said.append(f"{point:.1f}s ({stored_results(data):,} stored)")
            process = subprocess.Popen(
                [sys.executable, "-m", "tui_batch", "resume", job_id(data)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=environment(data),
            )
        code = process.wait()
        assert code == 0, code
        print(f"   span from the first upload to the end, unharmed: {span:.1f}s")
        print(f"   killed at: {', '.join(said)}")
        stats = server.stats()
        made = Counter(stats["creates"][f] for f in set(stats["creates"]) - set(before["creates"]))
        answers: Counter[int] = Counter()
        for line_id, times in stats["answers"].items():
            if line_id.startswith(job_id(data)):
                answers[int(line_id.split(":")[1])] += times
        print(f"   creates per input file: {dict(made)} (each must be 1)")
        print(
            f"   answers per prompt at the provider: {dict(Counter(answers.values()))} (each "
            f"must be 1), {len(answers):,} prompts"
        )
        print(
            f"   results stored: {stored_results(data):,} of {count:,}, all succeeded: "
            f"{stored_results(data, ok=True) == count}"
        )
    finally:
        server.stop()


def start_job(
    folder: Path, name: str, server: Server, count: int
) -> tuple[subprocess.Popen[bytes], Path]:
    """The crash benchmark's job, started: files of 500 lines, two at once."""
    data = folder / f"data-{name}"
    args = ["run", str(prompts_file(folder, count)), "--server", server.url, "--batch-api",
            "--batch-max-lines", "500", "--batch-files", "2", *QUICK]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "tui_batch", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment(data),
    )
    return process, data


def first_upload(server: Server, before: dict | None = None) -> float:
    """When the job's first file reached the server (after `before`'s uploads)."""
    already = (before or {}).get("calls", {}).get("upload", 0)
    while server.stats()["calls"].get("upload", 0) <= already:
        time.sleep(0.01)
    return time.monotonic()


def job_id(data: Path) -> str:
    return only_checkpoint(data).stem.removeprefix("batch_")


def stored_results(data: Path, ok: bool = False) -> int:
    try:
        with sqlite3.connect(f"{only_checkpoint(data).as_uri()}?mode=ro", uri=True) as c:
            where = " WHERE success = 1" if ok else ""
            return c.execute(f"SELECT COUNT(*) FROM results{where}").fetchone()[0]
    except (sqlite3.Error, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-size", action="store_true")
    parser.add_argument("--skip-crashes", action="store_true")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_size:
            size(Path(folder))
        if not args.skip_crashes:
            crashes(Path(folder), args.kills, args.seed)


if __name__ == "__main__":
    main()
