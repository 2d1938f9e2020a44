"""tui-batch's parallel decode loop against llama.cpp's own limit, `llama-batched-bench`.

For each N (prompts decoded together), on the same model, prompt length and answer
length, in one run:
  - `llama-batched-bench` (N sequences in one batch, no Python at all, no sampling): its
    generation tokens/s (S_TG: the N x TG tokens after the prefill, over their time) and
    over the whole run, prefill included;
  - `tui-batch run --parallel N` on N prompts of that length, greedy, answers of exactly
    that many tokens: the same two figures from its own step clock (`StepTiming`: the
    generation phase runs from the end of the last step that decoded prompt tokens to the
    end of the last step, the engine's time between steps included), and its time per
    step split into `llama_decode` (the model, waited for) and the rest;
  - the plain llama-cpp-python loop (`create_chat_completion` one prompt after another)
    on `--plain-prompts` of the same prompts, its generated tokens/s (the load left out).

Models: `tiny`, a random-weight GGUF with TinyLlama-1.1B's shapes in Q4_0 (what the GPU
figures are asked on), or `light`, the same vocabulary on one narrow layer (the model's
work is almost nothing, so the step's rest shows as it would on a fast GPU), or a path.

    python benchmarks/decode_limit.py --batched-bench PATH [--model tiny|light|FILE]
        [--n 1 16 64 128 255] [--prompt-tokens 128] [--max-tokens 128]
        [--gpu-layers -1] [--threads 4] [--plain-prompts 8] [--cache-dir DIR]

`benchmarks/gpu/decode_limit.sh` builds `llama-batched-bench` beside the CUDA
llama-cpp-python and runs this on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from baseline import plain_loop, timed, tui_batch_run
from throughput import LIGHT, TINY, write_tiny_model

from tui_batch.backends.llama.device_greedy import ENV as DEVICE_GREEDY

WORDS = [a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"]


def model_path(name: str, cache: Path) -> Path:
    if name == "tiny":
        return write_tiny_model(cache / "random-tinyllama-1.1b-q4_0.gguf", TINY)
    if name == "light":
        return write_tiny_model(cache / "random-light-32k-q4_0.gguf", LIGHT)
    return Path(name)


def prompts_of(model: Path, count: int, length: int) -> list[str]:
    """`count` different prompts, each `length` tokens once in the chat template (the
    random models' ChatML; another model's template may make them a little longer)."""
    from llama_cpp import Llama

    vocab = Llama(model_path=str(model), vocab_only=True, verbose=False)

    def tokens(text: str) -> int:  # the random models' ChatML (`CHATML`), one message
        chat = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        return len(vocab.tokenize(chat.encode(), add_bos=False, special=True))

    prompts = []
    for number in range(count):
        words = [f"n{number}"]  # a different first token: no prompt shares a start
        while tokens(" ".join(words)) < length:
            words.append(WORDS[(number * 31 + len(words) * 7) % len(WORDS)])
        while tokens(" ".join(words)) > length and len(words) > 1:
            words.pop()
        prompts.append(" ".join(words))
    return prompts


def batched_bench(binary: Path, model: Path, counts: list[int], args) -> dict[int, dict]:
    """`llama-batched-bench` at each N, as tui-batch decodes: batches of 512, a KV cache
    per sequence (not unified), flash attention where the hardware has it."""
    per_sequence = -(-(args.prompt_tokens + args.max_tokens) // 256) * 256
    command = [
        str(binary),
        "-m", str(model),
        "-c", str(per_sequence * max(counts)),
        "-b", "512",
        "-ub", "512",
        "-npp", str(args.prompt_tokens),
        "-ntg", str(args.max_tokens),
        "-npl", ",".join(map(str, counts)),
        "-ngl", str(args.gpu_layers if args.gpu_layers >= 0 else 999),
        "-t", str(args.threads),
        "--output-format", "jsonl",
    ]  # fmt: skip
    ran = subprocess.run(command, capture_output=True, text=True, check=False)
    if ran.returncode != 0:
        raise SystemExit(f"llama-batched-bench failed ({ran.returncode}): {ran.stderr[-2000:]}")
    rows = {}
    for line in (ran.stdout + ran.stderr).splitlines():
        if line.startswith("{") and '"speed_tg"' in line:
            row = json.loads(line)
            rows[row["pl"]] = row
    return rows


def run_tui_batch(
    model: Path, prompts: list[str], count: int, args, work: Path, device: bool = False
) -> dict:
    """`tui-batch run --parallel N` on N of the prompts: its step timing and answers.
    `device`: greedy tokens chosen on the GPU (`TUI_BATCH_DEVICE_GREEDY=1`)."""
    name = f"{count}{'d' if device else ''}"
    prompt_json, out = work / f"p{name}.json", work / f"t{name}.json"
    timing_file = work / f"t{name}.timing"
    prompt_json.write_text(json.dumps(prompts[:count]))
    n_ctx = args.prompt_tokens + args.max_tokens + 8
    settings = (args.max_tokens, args.threads, n_ctx, args.gpu_layers)
    command = tui_batch_run(
        model, prompt_json, *settings, count, out, args.extra, timing_file=timing_file
    )
    env = {**os.environ, "TUI_BATCH_DATA_DIR": str(work / "data")}
    env[DEVICE_GREEDY] = "1" if device else "0"
    timed(command, env)  # its own step clock is what is compared, not the wall
    results = json.loads(out.read_text())["results"]
    timing = json.loads(timing_file.read_text())[0]
    return {
        "generated": sum(r["tokens_output"] for r in results),
        "prompt_tokens": sum(r["tokens_input"] for r in results) / len(results),
        "timing": timing,
    }


def run_plain(model: Path, prompts: list[str], args, work: Path) -> float:
    """The plain loop's generated tokens/s on `--plain-prompts` prompts, load left out."""
    prompt_json, out = work / "plain.json", work / "plain-out.json"
    prompt_json.write_text(json.dumps(prompts[: args.plain_prompts]))
    n_ctx = args.prompt_tokens + args.max_tokens + 8
    settings = (args.max_tokens, args.threads, n_ctx, args.gpu_layers)
    timed(plain_loop(model, prompt_json, *settings, out), dict(os.environ))
    tokens = sum(answer["tokens"] for answer in json.loads(out.read_text()))
    return tokens / float(Path(str(out) + ".seconds").read_text())


def row_line(label: str, row: dict | None, ours: dict, count: int, plain: float, args) -> str:
    """One N's line: batched-bench's figures beside tui-batch's, and its step split."""
    timing = ours["timing"]
    generation = timing["last_step_at"] - timing["prefill_ended_at"]
    tg_rate = timing["generated_since_prefill"] / generation if generation > 0 else 0.0
    whole = timing["last_step_at"] - timing["first_step_at"]
    whole_rate = ours["generated"] / whole if whole > 0 else 0.0
    steps = max(1, timing["steps"])
    decode_ms = 1000 * timing["decode_seconds"] / steps
    other_ms = 1000 * timing["other_seconds"] / steps
    bench_tg = row["speed_tg"] if row else float("nan")
    bench_whole = row["pl"] * row["tg"] / row["t"] if row else float("nan")
    line = (
        f"{label:>6} | {bench_tg:>13.1f} {tg_rate:>10.1f} {tg_rate / bench_tg:>5.2f}x | "
        f"{bench_whole:>16.1f} {whole_rate:>10.1f} {whole_rate / bench_whole:>5.2f}x | "
        f"{whole_rate / plain:>7.2f}x | {decode_ms + other_ms:>8.2f} {decode_ms:>7.2f} "
        f"{other_ms:>7.2f} {1000 * other_ms / count:>7.1f}us"
    )
    wanted = count * args.max_tokens
    if abs(ours["prompt_tokens"] - args.prompt_tokens) > 1 or ours["generated"] != wanted:
        line += (
            f"\n       (tui-batch's prompts were {ours['prompt_tokens']:.1f} tokens and it "
            f"generated {ours['generated']} of {wanted})"
        )
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batched-bench", type=Path, required=True, help="its binary")
    parser.add_argument("--model", default="tiny", help="tiny, light or a GGUF file")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 16, 64, 128, 255])
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--gpu-layers", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--plain-prompts", type=int, default=8)
    parser.add_argument(
        "--device-greedy",
        action="store_true",
        help="also run tui-batch with greedy tokens chosen on the GPU (a row 'N dev')",
    )
    parser.add_argument("--extra", nargs="*", default=[], help="more flags for each tui-batch run")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.cache_dir is None:
        import platformdirs

        args.cache_dir = Path(platformdirs.user_cache_dir("tui-batch")) / "bench"
    args.extra = [f"--{flag}" if not flag.startswith("-") else flag for flag in args.extra]
    work = Path(tempfile.mkdtemp(prefix="tui-batch-decode-limit-"))
    started = time.perf_counter()
    model = model_path(args.model, args.cache_dir)
    prompts = prompts_of(model, max(args.n), args.prompt_tokens)
    print(
        f"model {model.name} ({model.stat().st_size / 2**20:.0f} MiB), "
        f"{args.prompt_tokens} prompt tokens and {args.max_tokens} generated per sequence, "
        f"greedy, --gpu-layers {args.gpu_layers}, --threads {args.threads}"
        + (f", tui-batch {' '.join(args.extra)}" if args.extra else "")
        + f" ({time.perf_counter() - started:.0f}s to write the model and prompts)",
        flush=True,
    )
    bench = batched_bench(args.batched_bench, model, args.n, args)
    plain = run_plain(model, prompts, args, work)
    print(f"plain llama-cpp-python loop: {plain:.1f} generated tok/s", flush=True)
    print(
        f"{'N':>6} | {'batched-bench':>13} {'tui-batch':>10} {'ratio':>6} | "
        f"{'whole run: bench':>16} {'tui-batch':>10} {'ratio':>6} | {'vs plain':>8} | "
        f"{'ms/step':>8} {'decode':>7} {'other':>7} {'other/row':>9}"
    )
    for count in args.n:
        for device in (False, True) if args.device_greedy else (False,):
            label = f"{count} dev" if device else str(count)
            ours = run_tui_batch(model, prompts, count, args, work, device)
            print(row_line(label, bench.get(count), ours, count, plain, args), flush=True)
    print(
        "batched-bench / tui-batch: generated tokens/s after the prefill (batched-bench's "
        "S_TG); whole run: the same N x TG tokens over prefill and generation; vs plain: "
        "tui-batch's whole run against the plain loop; ms/step: tui-batch's step split "
        "into llama_decode (waited for) and the rest"
    )


if __name__ == "__main__":
    main()
