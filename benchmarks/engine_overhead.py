"""tui-batch's overhead over a plain llama-cpp-python loop, measured in one run.

Runs, alternately and `--repeats` times each, in fresh processes:
  (a) a plain `Llama.create_chat_completion` loop over the example prompts,
  (b) `tui-batch run examples/batch_prompts.txt --parallel 0` with the same settings
      (one prompt at a time, as the loop: this measures the engine's own cost;
      `benchmarks/throughput.py` measures what parallel decoding gains),
and prints each one's median wall time (start-up, model load and generation included),
generated tokens per second, and the overhead of (b) over (a). It also checks that both
gave the same answers (greedy decoding).

    python benchmarks/engine_overhead.py [--max-tokens 64] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "examples" / "batch_prompts.txt"

PLAIN_LOOP = """
import json, sys
from llama_cpp import Llama
model, prompts_file, max_tokens, threads, n_ctx, out = sys.argv[1:]
prompts = [l.strip() for l in open(prompts_file, encoding="utf-8")
           if l.strip() and not l.strip().startswith("#")]
llm = Llama(model_path=model, n_ctx=int(n_ctx), n_threads=int(threads),
            n_threads_batch=int(threads), verbose=False)
answers = []
for prompt in prompts:
    reply = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}],
                                       max_tokens=int(max_tokens), temperature=0.0, top_p=0.95)
    answers.append({"text": reply["choices"][0]["message"]["content"],
                    "tokens": reply["usage"]["completion_tokens"]})
json.dump(answers, open(out, "w"))
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from tui_batch.models import demo_model_path

    model = str(demo_model_path())
    work = Path(tempfile.mkdtemp(prefix="tui-batch-overhead-"))
    env = {**os.environ, "TUI_BATCH_DATA_DIR": str(work / "data")}
    plain_out, engine_out = work / "plain.json", work / "engine.json"
    plain_cmd = [
        sys.executable,
        "-c",
        PLAIN_LOOP,
        model,
        str(PROMPTS),
        str(args.max_tokens),
        str(args.threads),
        str(args.n_ctx),
        str(plain_out),
    ]
    engine_cmd = [
        sys.executable,
        "-m",
        "tui_batch",
        "run",
        str(PROMPTS),
        "--model",
        model,
        "--max-tokens",
        str(args.max_tokens),
        "--threads",
        str(args.threads),
        "--n-ctx",
        str(args.n_ctx),
        "--temperature",
        "0",
        "--parallel",
        "0",
        "--out",
        str(engine_out),
    ]
    plain_times, engine_times = [], []
    for _ in range(args.repeats):
        plain_times.append(timed(plain_cmd, env))
        engine_times.append(timed(engine_cmd, env))

    plain = json.loads(plain_out.read_text())
    engine = json.loads(engine_out.read_text())["results"]
    tokens = sum(a["tokens"] for a in plain)
    same = [a["text"] for a in plain] == [r["response_text"] for r in engine]
    same_tokens = tokens == sum(r["tokens_output"] for r in engine)
    plain_s, engine_s = statistics.median(plain_times), statistics.median(engine_times)
    print(
        f"{len(plain)} prompts, max {args.max_tokens} tokens, greedy, {args.threads} thread(s), "
        f"{args.repeats} alternating runs each (median wall time, model load included)"
    )
    print(f"{'':28}{'wall':>9}{'tokens':>8}{'tok/s':>9}")
    print(f"{'(a) plain llama-cpp loop':28}{plain_s:>8.2f}s{tokens:>8}{tokens / plain_s:>9.1f}")
    print(f"{'(b) tui-batch run':28}{engine_s:>8.2f}s{tokens:>8}{tokens / engine_s:>9.1f}")
    print(
        f"overhead of (b) over (a): {100 * (engine_s / plain_s - 1):+.1f}% "
        f"(ratio a/b {plain_s / engine_s:.3f}); runs a: "
        f"{', '.join(f'{t:.2f}' for t in plain_times)}; b: {', '.join(f'{t:.2f}' for t in engine_times)}"
    )
    print(
        f"same answers: {'yes' if same else 'NO'}; same token counts: {'yes' if same_tokens else 'NO'}"
    )


if __name__ == "__main__":
    main()
