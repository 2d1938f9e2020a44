"""Thinking models in-process: the budget holds, thinking rides the batched step, and
following the thought costs next to nothing. Every figure is a ratio or a count from
one run, the same llama.cpp threads on every side.

The model is the demo model made to think (tests/support/thinking_model.py: `<think>`
and `</think>` tokens, a Qwen-style template whose prompt opens the thought), greedy.

  (1) budget: `--reasoning-budget 32`, max tokens 96, --parallel 16, then with a schema
      as well: the longest thought, how many answers follow their thought, how many
      are valid;
  (2) the parallel loop: --parallel 16 against --parallel 0, with thinking (budget 32)
      and without it (the demo model itself, max tokens 48: about the same output per
      prompt): the two speed-ups side by side (asked: with >= without - 10%);
  (3) following and splitting the thought: time spent in the tracker and its rules
      (token ids, forcing, the split into thought and answer) against the job's wall
      time, one prompt at a time (asked: <= 2%), and in the parallel loop.

    python benchmarks/reasoning.py [--prompts 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tui_batch.backends.llama import thinking, thought_rules
from tui_batch.backends.llama.parallel import ParallelLlamaBackend
from tui_batch.backends.llama.sequential import LlamaCppBackend
from tui_batch.core.jobs import GenerationSettings
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.structured.schema import parse_schema
from tui_batch.models.catalog import demo_model_path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.thinking_model import make_thinking_model  # noqa: E402

TOPICS = ["a cat", "the sea", "prime numbers", "a kettle", "rain", "TCP", "a lighthouse", "bread"]


def prompts(count: int) -> list[str]:
    asks = ["Write two sentences about {}.", "What is one fact about {}?", "Describe {} briefly."]
    return [asks[i % len(asks)].format(TOPICS[i % len(TOPICS)]) for i in range(count)]


def run(model: Path, parallel: int, texts: list[str], **chosen):
    """One job: (wall seconds, generated tokens, results)."""
    settings = GenerationSettings(**chosen)
    processor = BatchProcessor(Path(tempfile.mkdtemp()))
    job = processor.create_job("bench", texts, settings=settings)
    backend = ParallelLlamaBackend(model, parallel) if parallel else LlamaCppBackend(model)
    with backend:
        backend.open(settings)  # the load is not the job's time
        started = time.perf_counter()
        results = processor.process_batch(job, backend)
        seconds = time.perf_counter() - started
    return seconds, sum(r.tokens_output for r in results), results


class Timed:
    """Seconds spent in some functions, summed (they are wrapped in place)."""

    def __init__(self, *targets: tuple[object, str]) -> None:
        self.seconds = 0.0
        for owner, name in targets:
            original = getattr(owner, name)

            def timed(*args, _original=original, **kwargs):
                started = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - started

            setattr(owner, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    model = make_thinking_model(Path(tempfile.mkdtemp()), opens=True)
    plain = demo_model_path()
    texts = prompts(args.prompts)
    common = {"n_threads": args.threads, "temperature": 0.0}
    print(f"{len(texts)} prompts, {args.threads} thread(s), greedy\n")

    # (1) The budget, without and with a schema.
    schema = parse_schema("topic: str, mood: happy|sad|neutral")
    for label, extra in (("budget 32", {}), ("budget 32 + schema", {"schema": schema})):
        _, _, results = run(model, 16, texts, max_tokens=96, reasoning_budget=32, **common, **extra)
        longest = max(r.reasoning_tokens or 0 for r in results)
        followed = sum(1 for r in results if r.reasoning is not None and r.response_text.strip())
        valid = sum(1 for r in results if r.success)
        print(
            f"(1) {label:20} longest thought {longest} tokens; an answer follows "
            f"{followed}/{len(results)}; succeeded (valid) {valid}/{len(results)}"
        )

    # (2) The parallel loop's speed-up, thinking and not.
    thinking_on = {"max_tokens": 64, "reasoning_budget": 32, **common}
    speed = {}
    for label, path, chosen in (
        ("thinking", model, thinking_on),
        ("plain", plain, {"max_tokens": 48, **common}),
    ):
        alone_s, alone_n, _ = run(path, 0, texts, **chosen)
        batched_s, batched_n, _ = run(path, 16, texts, **chosen)
        speed[label] = (batched_n / batched_s) / (alone_n / alone_s)
        print(
            f"(2) {label:9} --parallel 0: {alone_n / alone_s:6.1f} tok/s  --parallel 16: "
            f"{batched_n / batched_s:6.1f} tok/s  speed-up {speed[label]:.2f}x"
        )
    print(
        f"    thinking's speed-up / plain's: {speed['thinking'] / speed['plain']:.2f} "
        "(asked: >= 0.90)"
    )

    # (3) What following the thought costs.
    timed = Timed(
        (thought_rules.ThoughtRules, "__call__"),
        (thought_rules.ThoughtRules, "news"),
        (thought_rules.ThoughtRules, "stopped"),
    )
    seconds, tokens, _ = run(model, 0, texts, **thinking_on)
    print(
        f"(3) --parallel 0: {timed.seconds * 1000:.0f} ms of {seconds:.1f} s in the thought's "
        f"rules and split = {100 * timed.seconds / seconds:.2f}% ({tokens} tokens; asked <= 2%)"
    )
    tracked = Timed((thinking.ThoughtTracker, "take"))
    seconds, tokens, _ = run(model, 16, texts, **thinking_on)
    print(
        f"    --parallel 16: {tracked.seconds * 1000:.0f} ms of {seconds:.1f} s in the "
        f"tracker = {100 * tracked.seconds / seconds:.2f}% ({tokens} tokens)"
    )


if __name__ == "__main__":
    main()
