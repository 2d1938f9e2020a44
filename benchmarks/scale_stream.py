"""Jobs of millions of prompts in flat memory: a prompts file and a template over a CSV,
run through the path `tui-batch run` takes (a stream read in as the job runs, results
kept in the checkpoint only) on an instant backend, then exported (CSV, JSONL), counted
(`tui-batch stats`), opened in the results viewer (its first page) and sampled
(`--sample 1000`), each in a fresh process.

Prints, for each size and input: peak RSS, time per prompt, time to the first result;
for the export, stats, viewer and sample: time and peak RSS; then the ratios the issue asks
for (largest size against the smallest).

    python benchmarks/scale_stream.py [--sizes 100000 1000000 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def write_inputs(folder: Path, size: int) -> tuple[Path, Path, Path]:
    prompts = folder / "prompts.txt"
    data = folder / "data.csv"
    template = folder / "t.jinja"
    with prompts.open("w") as out:
        for i in range(size):
            out.write(f"Prompt number {i}: explain topic {i % 97}.\n")
    with data.open("w") as out:
        out.write("id,topic,level\n")
        for i in range(size):
            out.write(f"{i},topic {i % 97},{i % 5}\n")
    template.write_text("Explain {{ topic }} at level {{ level }}.")
    return prompts, data, template


def run_child(kind: str, folder: Path) -> dict[str, float]:
    """One job through the stream, in this (fresh) process."""
    from tui_batch.core.backend import CallableBackend
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.core.prompt_stream import first_chunk, open_stream
    from tui_batch.core.run_spec import RunSpec

    os.environ["TUI_BATCH_DATA_DIR"] = str(folder / "data")
    if kind == "prompts":
        spec = RunSpec.from_values({"prompts": folder / "prompts.txt", "checkpoint_every": 1000})
    else:
        spec = RunSpec.from_values(
            {
                "template": folder / "t.jinja",
                "data": folder / "data.csv",
                "checkpoint_every": 1000,
            }
        )
    processor = BatchProcessor(folder / "data" / "checkpoints")
    start = time.perf_counter()
    first_result: list[float] = []

    def execute(prompt: str) -> dict[str, object]:
        if not first_result:
            first_result.append(time.perf_counter() - start)
        return {"response_text": prompt[::-1], "tokens_output": 8}

    stream = open_stream(spec, spec.input_slice)
    first = first_chunk(stream)
    job = processor.create_streamed_job("instant", stream, first, spec)
    processor.run_streamed(job, CallableBackend(execute), stream=stream)
    elapsed = time.perf_counter() - start
    return {
        "job_id": job.job_id,
        "prompts": job.total_prompts,
        "status": str(job.status),
        "seconds": elapsed,
        "per_prompt_us": 1e6 * elapsed / job.total_prompts,
        "first_result_s": first_result[0],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def timed(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """A CLI command's time and peak RSS (its own process, with `time -v`'s figure)."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True, env=env
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"{command}: {done.stderr[-2000:]}")
    rss_kib = int(done.stderr.strip().splitlines()[-1])
    return {"seconds": time.perf_counter() - start, "peak_rss_mib": rss_kib / 1024}


def measure(size: int) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="tui-batch-stream-"))
    write_inputs(folder, size)
    row: dict[str, object] = {"size": size}
    env = {**os.environ, "TUI_BATCH_DATA_DIR": str(folder / "data")}
    for kind in ("prompts", "template"):
        out = subprocess.run(
            [sys.executable, str(HERE), "--child", kind, str(folder)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row[kind] = json.loads(out)
    job_id = row["template"]["job_id"]  # type: ignore[index]
    cli = [sys.executable, "-m", "tui_batch"]
    row["export_csv"] = timed([*cli, "export", job_id, "--out", str(folder / "r.csv")], env)
    row["export_jsonl"] = timed([*cli, "export", job_id, "--out", str(folder / "r.jsonl")], env)
    row["stats"] = timed([*cli, "stats", job_id], env)
    # The results viewer's first page: the counts a filter bar shows, the rows on screen.
    row["viewer"] = timed(
        [
            sys.executable,
            "-c",
            "import sys; from tui_batch.core.results import ResultsView; "
            "v = ResultsView(sys.argv[1]); counts = v.counts(); shown = v.select('all'); "
            "page = v.fetch_with_prompts(shown[:40]); "
            "assert len(shown) == counts['all'] and len(page) == 40, (len(shown), len(page))",
            str(next((folder / "data" / "checkpoints").glob(f"batch_{job_id}.db"))),
        ],
        env,
    )
    row["sample"] = timed(
        [
            sys.executable,
            "-c",
            "import sys; from tui_batch.core.prompt_stream import PromptStream; "
            "from tui_batch.core.slices import InputSlice; "
            "s = PromptStream(prompts_file=sys.argv[1], chosen=InputSlice(sample=1000, seed=7)); "
            "n = len(s.chunk()); assert n == 1000, n",
            str(folder / "prompts.txt"),
        ],
        env,
    )
    subprocess.run(["rm", "-rf", str(folder)], check=False)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child[0], Path(args.child[1]))))
        return
    rows = []
    for size in args.sizes:
        row = measure(size)
        rows.append(row)
        print(f"\n{size:,} records (instant backend, checkpoint every 1,000 results)")
        for kind in ("prompts", "template"):
            r = row[kind]
            print(
                f"  run {kind:>8}: {r['seconds']:8.1f}s  {r['per_prompt_us']:7.1f}us/prompt  "
                f"first result {r['first_result_s']:5.2f}s  peak RSS {r['peak_rss_mib']:6.0f}MiB"
            )
        for name in ("export_csv", "export_jsonl", "stats", "viewer", "sample"):
            r = row[name]
            print(f"  {name:>12}: {r['seconds']:8.1f}s  peak RSS {r['peak_rss_mib']:6.0f}MiB")
        sys.stdout.flush()
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        print(f"\n{large['size']:,} against {small['size']:,}:")
        for kind in ("prompts", "template"):
            a, b = small[kind], large[kind]
            print(
                f"  {kind}: peak RSS x{b['peak_rss_mib'] / a['peak_rss_mib']:.2f} (<= 1.3), "
                f"time per prompt x{b['per_prompt_us'] / a['per_prompt_us']:.2f} (<= 1.2)"
            )
        for name in ("export_csv", "export_jsonl", "stats", "viewer"):
            a, b = small[name], large[name]
            print(
                f"  {name}: peak RSS x{b['peak_rss_mib'] / a['peak_rss_mib']:.2f} (<= 1.3), "
                f"{b['seconds']:.1f}s" + (" (stats: < 30 s)" if name == "stats" else "")
            )
        print(f"  sample 1000: {large['sample']['seconds']:.1f}s (< 20 s)")


if __name__ == "__main__":
    main()
