"""Shared by the benchmarks: the plain llama-cpp-python loop they compare against, the
`tui-batch run` they measure, the example prompts, and timing a fresh process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "batch_prompts.txt"

# What a person would write without tui-batch: load the model, loop, collect.
PLAIN_LOOP = """
import json, sys, time
from llama_cpp import Llama
model, prompts_file, max_tokens, threads, n_ctx, gpu_layers, out = sys.argv[1:]
prompts = json.load(open(prompts_file))
llm = Llama(model_path=model, n_ctx=int(n_ctx), n_threads=int(threads),
            n_threads_batch=int(threads), n_gpu_layers=int(gpu_layers), verbose=False)
answers = []
started = time.perf_counter()
for prompt in prompts:
    reply = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}],
                                       max_tokens=int(max_tokens), temperature=0.0)
    answers.append({"text": reply["choices"][0]["message"]["content"],
                    "tokens": reply["usage"]["completion_tokens"]})
json.dump(answers, open(out, "w"))
open(out + ".seconds", "w").write(str(time.perf_counter() - started))
"""


def plain_loop(model, prompts_json, max_tokens, threads, n_ctx, gpu_layers, out) -> list[str]:
    """The command running PLAIN_LOOP; it writes [{"text", "tokens"}] to `out`, and the
    loop's seconds (the model's load left out) to `out` + ".seconds"."""
    args = (model, prompts_json, max_tokens, threads, n_ctx, gpu_layers, out)
    return [sys.executable, "-c", PLAIN_LOOP, *map(str, args)]


# `tui-batch` as `python -m tui_batch` runs it, which also writes, as it exits, where each
# parallel backend's steps spent their time (`StepTiming`) to the file named first.
PROFILED_TUI_BATCH = """
import atexit, json, sys
from tui_batch.backends.llama import parallel as llama_parallel
from tui_batch.cli import main
timing_file = sys.argv.pop(1)
backends = []
original_init = llama_parallel.ParallelLlamaBackend.__init__
def init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    backends.append(self)
llama_parallel.ParallelLlamaBackend.__init__ = init
def write():
    with open(timing_file, "w") as out:
        json.dump([backend.timing.to_dict() for backend in backends], out)
atexit.register(write)
raise SystemExit(main(sys.argv[1:]))
"""


def tui_batch_run(
    model,
    prompts_json,
    max_tokens,
    threads,
    n_ctx,
    gpu_layers,
    parallel,
    out,
    extra=(),
    timing_file=None,
):
    """The command `tui-batch run` with the same settings, greedy, results to `out`.
    `parallel` None leaves it to tui-batch; `extra` adds flags; with `timing_file`, the
    backend's step timing is written there as the run ends."""
    options = {
        "--model": model,
        "--max-tokens": max_tokens,
        "--threads": threads,
        "--n-ctx": n_ctx,
        "--gpu-layers": gpu_layers,
        "--temperature": 0,
        "--out": out,
    }
    if parallel is not None:
        options["--parallel"] = parallel
    flags = [*(str(part) for pair in options.items() for part in pair), *extra]
    if timing_file is None:
        return [sys.executable, "-m", "tui_batch", "run", str(prompts_json), *flags]
    return [
        sys.executable,
        "-c",
        PROFILED_TUI_BATCH,
        str(timing_file),
        "run",
        str(prompts_json),
        *flags,
    ]


def example_prompts(count: int) -> list[str]:
    """The example prompts, repeated with a number to make up `count`."""
    lines = [line.strip() for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    return [
        prompts[i % len(prompts)] + ("" if i < len(prompts) else f" ({i})") for i in range(count)
    ]


def timed(command: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    """Wall time of `command` in a fresh process (model load included). `python -m`
    imports from its working folder first: `cwd` chooses which checkout runs."""
    start = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start
