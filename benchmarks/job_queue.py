"""Several jobs at once in one process: sharing a fleet, sharing a model. (Not named
queue.py: a script in this folder would import it as the standard library's `queue`.)

1. A fleet: a matrix of 3 variants x 60 prompts (`--matrix temperature=0,0.5,1`) on two
   real `llama_cpp.server`s (demo model, 1 thread each) against one job holding the same
   180 requests (each prompt at each temperature) on the same servers, same
   `--concurrency`. Prints both times and their ratio;
   then, from the servers' own access logs (`tests/support/logged_llama_server.py`), the most requests
   in flight at the fleet at once, for both runs, and, for a matrix run under `--rpm`,
   the most requests started in any 10 s against what the rate allows.
2. One model, two jobs: two jobs of 24 prompts on the demo model at `--parallel 16`, run
   as one group (`tui-batch run a.txt b.txt`: at once, the model loaded once) against
   the same two jobs as two `tui-batch run` commands one after the other. Prints both
   times, their ratio, and the peak RSS of the group against one command's; then the
   model's tokens/s with 1, 4, 8 and 16 prompts decoding together (what filling the
   slots one job leaves idle can gain at most).

3. The dashboard's keys: key-press to repaint on the progress screen of a
   100,000-prompt job (`ui_latency.py`, an instant backend: results as fast as they are
   stored) with 3 more jobs running beside it, against the same job alone, each in a
   fresh process. Prints both medians and worst cases, and their ratio.

    python benchmarks/job_queue.py                            # all three
    python benchmarks/job_queue.py --skip-fleet --skip-keys   # only 2
    # 2 on a GPU, on the random-weight 1.1B, every layer on the GPU:
    python benchmarks/job_queue.py --skip-fleet --skip-keys --model tiny --gpu-layers -1
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
sys.path.insert(0, str(REPO / "tests"))  # the tests' server harness, for section 1

EXAMPLES = REPO / "examples" / "batch_prompts.txt"
PROMPT = "In one sentence: "
TEMPERATURES = (0.0, 0.5, 1.0)
TOPICS = [line.strip() for line in EXAMPLES.read_text().splitlines() if line.strip()]


def run(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run a command; its wall time and peak RSS (KiB, from the kernel's accounting of
    that child alone)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            said = err.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"{' '.join(command[2:6])}... failed:\n{said}")
    return elapsed, usage.ru_maxrss


def tui_batch(*args: str) -> list[str]:
    return [sys.executable, "-m", "tui_batch", "run", *args]


def fleet(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    from tui_batch.models.catalog import demo_model_path

    from support.logged_llama_server import (
        fleet_events,
        most_in_flight,
        most_started_in,
        start_logged_servers,
    )

    model = demo_model_path()
    if model is None:
        raise SystemExit("the demo model is missing: pip install -e '.[dev]'")
    per_variant = args.fleet_prompts
    prompts = [f"{PROMPT}{TOPICS[i % len(TOPICS)]} (#{i})" for i in range(per_variant)]
    sixty, all_of_them = work / "variant.txt", work / "all.jsonl"
    sixty.write_text("\n".join(prompts) + "\n")
    # The same 180 requests in one job: each prompt at each variant's temperature (a
    # request line's own, as the OpenAI Batch API's format gives it).
    with all_of_them.open("w") as lines:
        for temperature in TEMPERATURES:
            for number, prompt in enumerate(prompts):
                body = {"messages": [{"role": "user", "content": prompt}]}
                request = {"custom_id": f"{temperature}-{number}", "method": "POST"}
                request |= {"url": "/v1/chat/completions"}
                body["temperature"] = temperature
                lines.write(json.dumps({**request, "body": body}) + "\n")
    matrix = "temperature=" + ",".join(f"{t:g}" for t in TEMPERATURES)
    logs = [work / "server-0.log", work / "server-1.log"]
    started = start_logged_servers(str(model), logs)
    servers = [flag for url, _ in started for flag in ("--server", url)]
    common = [*servers, "--model", "smollm2", "--max-tokens", "16", "--concurrency", "2"]
    try:
        print(
            f"Fleet: 3 variants x {per_variant} prompts against one job of {3 * per_variant}, "
            "two llama_cpp.server (demo model, 1 thread each), --concurrency 2, 16 tokens"
        )
        times: dict[str, list[float]] = {"matrix": [], "one job": []}
        peaks: dict[str, int] = {"matrix": 0, "one job": 0}
        for _ in range(args.repeat):
            for name, command in (
                ("matrix", tui_batch(str(sixty), *common, "--matrix", matrix)),
                ("one job", tui_batch(str(all_of_them), *common)),
            ):
                since = time.time()
                elapsed, _ = run(command, env)
                times[name].append(elapsed)
                peak = most_in_flight(fleet_events(logs, PROMPT, since, time.time()))
                peaks[name] = max(peaks[name], peak)
        best = {name: min(values) for name, values in times.items()}
        print(
            f"  matrix {best['matrix']:.1f}s, one job {best['one job']:.1f}s: "
            f"the matrix takes {best['matrix'] / best['one job']:.3f}x the time of one job "
            f"(best of {args.repeat}, alternating)"
        )
        print(
            f"  servers' logs: most in flight at the fleet at once: matrix {peaks['matrix']}, "
            f"one job {peaks['one job']} (--concurrency 2)"
        )
        rpm, count = 120, 30
        limited = work / "limited.txt"
        limited.write_text("\n".join(prompts[:count]) + "\n")
        since = time.time()
        elapsed, _ = run(
            tui_batch(str(limited), *common, "--rpm", str(rpm), "--matrix", "temperature=0,0.5,1"),
            env,
        )
        moments = fleet_events(logs, PROMPT, since, time.time())
        window = 10.0
        allowed = rpm / 60 * window + max(1.0, rpm / 60)  # the rate, and one second's burst
        print(
            f"  --rpm {rpm}, 3 variants x {count}: {3 * count} requests in {elapsed:.1f}s; "
            f"most started in any {window:.0f}s: {most_started_in(moments, window)} "
            f"(the rate allows {allowed:.0f}); most in flight {most_in_flight(moments)}"
        )
    finally:
        for _, process in started:
            process.kill()
            process.wait()


def one_model(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    first, second = work / "a.txt", work / "b.txt"
    first.write_text("\n".join(TOPICS[:24]) + "\n")
    second.write_text("\n".join(f"Briefly: {topic}" for topic in TOPICS[:24]) + "\n")
    flags = [
        "--parallel", "16", "--threads", str(args.threads),
        "--max-tokens", str(args.max_tokens), "--temperature", "0",
        "--gpu-layers", str(args.gpu_layers),
    ]  # fmt: skip
    if args.model is not None:
        flags += ["--model", str(args.model)]
    print(
        f"One model, two jobs: 2 x 24 prompts, {model_name(args)}, --parallel 16, "
        f"--threads {args.threads}, --gpu-layers {args.gpu_layers}, "
        f"--max-tokens {args.max_tokens}"
    )
    together_times, apart_times, together_rss, one_rss = [], [], 0, 0
    for _ in range(args.repeat):
        elapsed, rss = run(tui_batch(str(first), str(second), *flags), env)
        together_times.append(elapsed)
        together_rss = max(together_rss, rss)
        apart = 0.0
        for prompts in (first, second):
            elapsed, rss = run(tui_batch(str(prompts), *flags), env)
            apart += elapsed
            one_rss = max(one_rss, rss)
        apart_times.append(apart)
    together, apart = min(together_times), min(apart_times)
    print(
        f"  one group (at once, loaded once) {together:.1f}s; two commands one after the "
        f"other {apart:.1f}s: {apart / together:.2f}x sooner (best of {args.repeat})"
    )
    print(
        f"  peak RSS: the group {together_rss / 1024:.0f} MiB, one command "
        f"{one_rss / 1024:.0f} MiB ({together_rss / one_rss:.2f}x)"
    )


def model_name(args: argparse.Namespace) -> str:
    return "demo model" if args.model is None else args.model.name


def find_model(args: argparse.Namespace) -> None:
    """`--model tiny`: the random-weight 1.1B of throughput.py, written (or found) in the
    user cache; a GPU's figure is measured on it."""
    if args.model is not None and str(args.model) == "tiny":
        import platformdirs
        from throughput import write_tiny_model

        cache = Path(platformdirs.user_cache_dir("tui-batch")) / "bench"
        args.model = write_tiny_model(cache / "random-tinyllama-1.1b-q4_0.gguf")


SCALING = """
import sys, time
from tui_batch.backends.llama.parallel import ParallelLlamaBackend
from tui_batch.core.jobs import GenerationSettings
from tui_batch.core.processor import BatchProcessor
from tui_batch.models.catalog import demo_model_path
threads, layers, model, prompts = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
processor = BatchProcessor()
for slots in (1, 4, 8, 16):
    settings = GenerationSettings(
        max_tokens=32, temperature=0.0, n_threads=threads, n_gpu_layers=layers
    )
    backend = ParallelLlamaBackend(model or demo_model_path(), 16)
    backend.open(settings)
    job = processor.create_job("demo", prompts[:slots], settings=settings)
    start = time.perf_counter()
    results = processor.process_batch(job, backend)
    rate = sum(r.tokens_output for r in results) / (time.perf_counter() - start)
    backend.close()
    print(f"{slots}:{rate:.1f}")
"""


def scaling(args: argparse.Namespace, env: dict[str, str]) -> None:
    """The model's generated tokens/s with 1, 4, 8 and 16 prompts decoding together:
    what filling idle slots with another job's prompts can gain at most."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SCALING,
            str(args.threads),
            str(args.gpu_layers),
            str(args.model or ""),
            *TOPICS[:16],
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rates = dict(line.split(":") for line in done.stdout.split())
    print(
        "  the model's tokens/s with N prompts decoding together (32 tokens each): "
        + ", ".join(f"{n}: {rate}" for n, rate in rates.items())
    )


def keys(args: argparse.Namespace, env: dict[str, str]) -> None:
    """The dashboard's key-press latency with 3 jobs beside the big one, and alone."""
    print(f"Dashboard keys: a {args.key_prompts:,}-prompt job, alone and with 3 jobs beside it")
    medians = {}
    for others in (0, 3):
        done = subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "ui_latency.py"),
                "--prompts",
                str(args.key_prompts),
                "--others",
                str(others),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"ui_latency.py failed:\n{done.stderr[-3000:]}")
        line = next(x for x in done.stdout.splitlines() if x.startswith("key-press"))
        medians[others] = float(line.split("median ")[1].split(" ms")[0])
        print(f"  {'alone' if not others else '3 beside'}: {line}")
    print(
        f"  median with 3 jobs beside it {medians[3]:.1f} ms against {medians[0]:.1f} ms "
        f"alone: {medians[3] / medians[0]:.2f}x (asked: within 100 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--fleet-prompts", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-keys", action="store_true")
    parser.add_argument(
        "--model",
        type=Path,
        help="section 2's model: a .gguf path, or tiny (the random-weight 1.1B of "
        "throughput.py); default: the demo model",
    )
    parser.add_argument("--gpu-layers", type=int, default=0, help="section 2's (-1: all)")
    parser.add_argument("--key-prompts", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        env = {**os.environ, "TUI_BATCH_DATA_DIR": str(work / "data")}
        (work / "data").mkdir()
        if not args.skip_fleet:
            fleet(args, work, env)
        if not args.skip_model:
            find_model(args)
            one_model(args, work, env)
            scaling(args, env)
        if not args.skip_keys:
            keys(args, env)


if __name__ == "__main__":
    main()
