"""tui-batch's overhead over a plain llama-cpp-python loop, measured in one run.

Runs, alternately and `--repeats` times each, in fresh processes:
  (a) a plain `Llama.create_chat_completion` loop over the example prompts,
  (b) `tui-batch run --parallel 0` on the same prompts with the same settings
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
import tempfile
from pathlib import Path

from baseline import example_prompts, plain_loop, timed, tui_batch_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from tui_batch.models.catalog import demo_model_path

    model = str(demo_model_path())
    work = Path(tempfile.mkdtemp(prefix="tui-batch-overhead-"))
    env = {**os.environ, "TUI_BATCH_DATA_DIR": str(work / "data")}
    plain_out, engine_out = work / "plain.json", work / "engine.json"
    prompts = work / "prompts.json"
    prompts.write_text(json.dumps(example_prompts(25)))
    settings = (args.max_tokens, args.threads, args.n_ctx, 0)
    plain_cmd = plain_loop(model, prompts, *settings, plain_out)
    engine_cmd = tui_batch_run(model, prompts, *settings, 0, engine_out)
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
