"""Remote servers: tui-batch as a client, against what a person would write instead.

1. Client overhead: an instant OpenAI-compatible server (tests/support/fake_server.py, its own
   process), N prompts at concurrency C. `tui-batch run --server` (checkpoints on, results
   exported) against a plain `AsyncOpenAI` + semaphore loop that writes its answers to a
   file, same server, same requests (streamed, usage asked for), same run. Prints both
   rates and their ratio.
2. A fleet: two `python -m llama_cpp.server` (demo model, 1 thread each) against one,
   the example prompts x 64 tokens through `tui-batch run --server`. Prints both times
   and the speed-up.

    python benchmarks/remote.py                      # both, 20,000 prompts at 64
    python benchmarks/remote.py --skip-fleet --prompts 5000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from support.fake_server import free_port, start_llama_servers, wait_for_models  # noqa: E402 - the tests' server harness

EXAMPLES = REPO / "examples" / "batch_prompts.txt"

PLAIN_CLIENT = """
import asyncio, json, sys
from openai import AsyncOpenAI
url, prompts_file, concurrency, stream, out = sys.argv[1:]
prompts = [json.loads(line)["prompt"] for line in open(prompts_file)]
stream = stream == "1"

async def main():
    client = AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    gate = asyncio.Semaphore(int(concurrency))

    async def one(prompt):
        async with gate:
            kwargs = dict(model="fake-model", max_tokens=16, temperature=0.0, top_p=0.95,
                          messages=[{"role": "user", "content": prompt}])
            if not stream:
                reply = await client.chat.completions.create(**kwargs)
                return {"text": reply.choices[0].message.content,
                        "tokens": reply.usage.completion_tokens}
            parts, tokens = [], 0
            chunks = await client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **kwargs)
            async for chunk in chunks:
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    parts.append(choice.delta.content or "")
            return {"text": "".join(parts), "tokens": tokens}

    answers = await asyncio.gather(*(one(p) for p in prompts))
    await client.close()
    json.dump(answers, open(out, "w"))

asyncio.run(main())
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:5])}... failed:\n{done.stderr[-2000:]}")
    return elapsed


def tui_batch(prompts: Path, servers: list[str], out: Path, *flags: str) -> list[str]:
    command = [sys.executable, "-m", "tui_batch", "run", str(prompts), "--out", str(out)]
    for url in servers:
        command += ["--server", url]
    return [*command, "--temperature", "0", *flags]


def client_overhead(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "support" / "fake_server.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_models(url, server)
        prompts = work / "prompts.jsonl"
        with prompts.open("w") as f:
            for i in range(args.prompts):
                f.write(json.dumps({"prompt": f"Say something about the number {i}."}) + "\n")
        print(
            f"Client overhead: {args.prompts} prompts, concurrency {args.concurrency}, "
            f"instant server on {url} (8 chunks an answer)"
        )
        for stream in (True, False):
            mode = "streamed" if stream else "whole answers"
            plain = [
                sys.executable,
                "-c",
                PLAIN_CLIENT,
                url,
                str(prompts),
                str(args.concurrency),
                "1" if stream else "0",
                str(work / "plain.json"),
            ]
            ours = tui_batch(
                prompts,
                [url],
                work / "ours.jsonl",
                "--model",
                "fake-model",
                "--max-tokens",
                "16",
                "--concurrency",
                str(args.concurrency),
                *([] if stream else ["--no-stream"]),
            )
            # Alternate, best of `repeat`: the machine's other load hits both alike.
            plain_times, our_times = [], []
            for _ in range(args.repeat):
                plain_times.append(timed(plain, env))
                our_times.append(timed(ours, env))
            plain_rate = args.prompts / min(plain_times)
            our_rate = args.prompts / min(our_times)
            print(
                f"  {mode:13}  plain AsyncOpenAI + semaphore {plain_rate:7.0f} req/s   "
                f"tui-batch (checkpoints every 5) {our_rate:7.0f} req/s   "
                f"ratio {our_rate / plain_rate:.2f}"
            )
    finally:
        server.kill()
        server.wait()


JOB_TIME = """
import sys, time
from tui_batch.backends.factory import remote_backend
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.servers import server_settings_from_text
from tui_batch.core.settings import GenerationSettings
prompts_file, stream, *urls = sys.argv[1:]
processor = BatchProcessor()
server = server_settings_from_text(urls, {"stream": stream == "1"})
job = processor.create_job("smollm2", processor.load_prompts_from_file(prompts_file),
                           server=server, settings=GenerationSettings(max_tokens=64))
with remote_backend(server, "smollm2") as backend:
    start = time.perf_counter()
    processor.process_batch(job, backend)
    print(time.perf_counter() - start)
"""


def job_time(urls: list[str], work: Path, env: dict[str, str], stream: bool) -> float:
    """The job alone, through the Python API in a fresh process: what the command does
    between its start-up (imports, checks) and its export."""
    done = subprocess.run(
        [sys.executable, "-c", JOB_TIME, str(EXAMPLES), "1" if stream else "0", *urls],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def fleet(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    from tui_batch.models.catalog import demo_model_path

    model = demo_model_path()
    if model is None:
        raise SystemExit("the demo model is missing: pip install -e '.[dev]'")
    started = start_llama_servers(str(model), 2)
    # Two in flight at each (it serves one at a time): one answering, one waiting, so no
    # server idles between requests, and no queue builds up at a server that is slower.
    urls = [f"{url}#2" for url, _ in started]
    try:
        flags = ("--max-tokens", "64", "--model", "smollm2")
        print(
            "Fleet: 25 example prompts x 64 tokens, llama_cpp.server, 1 thread each, "
            f"#2 in flight at each; best of {args.repeat}, alternating"
        )
        for stream in (True, False):
            mode = [] if stream else ["--no-stream"]
            jobs: dict[int, list[float]] = {1: [], 2: []}
            commands: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.repeat):
                for count in (1, 2):
                    jobs[count].append(job_time(urls[:count], work, env, stream))
                    out = work / f"fleet{count}.json"
                    command = tui_batch(EXAMPLES, urls[:count], out, *flags, *mode)
                    commands[count].append(timed(command, env))
            print("  streamed" if stream else "  whole answers (--no-stream)")
            for name, times in (("the job (API)", jobs), ("tui-batch run (command)", commands)):
                one, two = min(times[1]), min(times[2])
                print(
                    f"    {name:24} one server {one:5.1f} s   two servers {two:5.1f} s   "
                    f"speed-up {one / two:.2f}x"
                )
    finally:
        for _, process in started:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        env = {**os.environ, "TUI_BATCH_DATA_DIR": str(work / "data"), "OPENAI_API_KEY": "none"}
        if not args.skip_overhead:
            client_overhead(args, work, env)
        if not args.skip_fleet:
            fleet(args, work, env)


if __name__ == "__main__":
    main()
