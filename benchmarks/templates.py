"""Rendering and validating template records: records/s and peak memory.

Writes a CSV of `--records` short product reviews (once, to a temporary folder), then, in
one run, alternating, best of `--repeats`:
  (a) the loop a person would write: `csv.DictReader` and `str.format`, no checks,
  (b) tui-batch's `validate(PromptTemplate(...), iter_records(path))`: streamed records,
      the Jinja2 sandbox with StrictUndefined, every variable checked in every record,
and prints records/s for each, the ratio, and the process's peak RSS. Then, once:
  (c) `render_prompts`, what `tui-batch run --template` does before a job is made: the
      data file hashed, every record rendered and kept as a prompt with its id and
      fields (a job holds its prompts), and the peak RSS after it.

    python benchmarks/templates.py [--records 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import tempfile
import time
from pathlib import Path

from tui_batch.core.templates.records import iter_records
from tui_batch.core.templates.render import render_prompts
from tui_batch.core.templates.template import PromptTemplate, validate

TEMPLATE = "Classify the sentiment of this review of {{ product }}: {{ review }}"
WORDS = [
    "good",
    "bad",
    "great",
    "awful",
    "cheap",
    "pricey",
    "sturdy",
    "flimsy",
    "fast",
    "slow",
    "loud",
    "quiet",
    "soft",
]


def write_data(path: Path, count: int) -> None:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "product", "review"])
        for i in range(count):
            words = " ".join(rng.choice(WORDS) for _ in range(10))
            writer.writerow([i, f"product {i % 500}", f'It is {words}, "really".'])


def plain(path: Path) -> int:
    fmt = "Classify the sentiment of this review of {product}: {review}"
    count = 0
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            fmt.format(**row)
            count += 1
    return count


def ours(path: Path) -> int:
    found = validate(PromptTemplate(TEMPLATE), iter_records(path))
    assert found.ok, found.summary()
    return found.rendered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = Path(tempfile.mkdtemp(prefix="tui-batch-templates-")) / "reviews.csv"
    write_data(path, args.records)
    size = path.stat().st_size / 2**20
    best = {"plain": float("inf"), "ours": float("inf")}
    for _ in range(args.repeats):
        for name, run in (("plain", plain), ("ours", ours)):
            start = time.perf_counter()
            assert run(path) == args.records
            best[name] = min(best[name], time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        f"{args.records:,} CSV records ({size:.0f} MiB), one-line template, best of {args.repeats}"
    )
    for name, label in (
        ("plain", "(a) csv.DictReader + str.format"),
        ("ours", "(b) tui-batch validate"),
    ):
        print(f"{label:36}{best[name]:8.2f} s {args.records / best[name]:>12,.0f} records/s")
    print(
        f"(b) / (a) time: {best['ours'] / best['plain']:.2f}; peak RSS of this process {peak:.0f} MiB"
    )
    start = time.perf_counter()
    rendered = render_prompts(PromptTemplate(TEMPLATE), path, id_field="id")
    took = time.perf_counter() - start
    assert len(rendered.prompts) == args.records
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{'(c) tui-batch render_prompts':36}{took:8.2f} s {args.records / took:>12,.0f} "
        f"records/s; peak RSS with every prompt kept {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
