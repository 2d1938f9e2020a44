"""The answer cache with real parts: the demo model, two real `llama_cpp.server`s, the
`tui-batch` command in real subprocesses, and the cache file on disk."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from tui_batch.backends.factory import llama_backend, remote_backend
from tui_batch.core.cache.answers import AnswerCache, CachedAnswer
from tui_batch.core.cache.job_cache import JobCache
from tui_batch.core.jobs import GenerationSettings
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.servers import server_settings_from_text
from tui_batch.core.structured.schema import parse_choices

from conftest import run_cli
from support.fake_server import start_llama_servers

CHOICES = "positive,negative,neutral"
REVIEWS = [
    "I love it, works perfectly.",
    "Broke after a day. Awful.",
    "It is fine, nothing special.",
    "Best purchase this year!",
]
ALIAS = "smollm2"


def job_id_in(stderr: str) -> str:
    return stderr.split("Job ", 1)[1].split(":", 1)[0]


@pytest.mark.model
def test_a_second_run_is_served_whole_and_exports_where_each_answer_came_from(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(REVIEWS) + "\n")
    flags = ["--choices", CHOICES, "--cache", "read-write", "--threads", "1"]
    first = run_cli("run", str(prompts), *flags, "--out", str(tmp_path / "a.csv"))
    assert first.returncode == 0, first.stderr
    assert "cache: 0 of 4 answers served" in first.stderr
    assert "cache: 4 new answers kept" in first.stderr
    second = run_cli("run", str(prompts), *flags, "--out", str(tmp_path / "b.csv"))
    assert second.returncode == 0, second.stderr
    assert "cache: 4 of 4 answers served" in second.stderr and "; 0 to run" in second.stderr
    assert "4 succeeded (4 served from the cache)" in second.stderr
    # Said once, and true: 4 to answer (not "4 to run"), and nothing generated.
    assert "(4 to answer;" in second.stderr and "(0 tokens generated)" in second.stderr
    rows_a = list(csv.DictReader((tmp_path / "a.csv").open()))
    rows_b = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert [r["response"] for r in rows_b] == [r["response"] for r in rows_a]
    assert {r["cached_from"] for r in rows_a} == {""}
    assert {r["cached_from"] for r in rows_b} == {job_id_in(first.stderr)}
    stats = run_cli("stats", job_id_in(second.stderr), "--json")
    cache = json.loads(stats.stdout)["cache"]
    assert cache["hits"] == 4 and cache["misses"] == 0 and cache["tokens_saved"] > 0
    listing = json.loads(run_cli("cache", "stats", "--json").stdout)
    assert listing["answers"] == 4 and listing["hits"] == 4
    assert listing["models"][0]["model"].endswith(".gguf")


@pytest.mark.model
def test_answers_cut_off_by_max_tokens_are_never_kept(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Write a long story about a cat.\nWrite a long story about a dog.\n")
    flags = ["--max-tokens", "3", "--cache", "read-write", "--threads", "1"]
    first = run_cli("run", str(prompts), *flags)
    assert first.returncode == 0, first.stderr
    assert "cache: 0 new answers kept; not kept (they run again next time): 2 cut off" in (
        first.stderr
    )
    second = run_cli("run", str(prompts), *flags)
    assert "cache: 0 of 2 answers served" in second.stderr
    assert run_cli("cache", "stats", "--json").stdout.count('"answers": 0') == 1


@pytest.mark.model
def test_all_answers_served_loads_no_model(demo_model, tmp_path):
    processor = BatchProcessor()
    settings = GenerationSettings(schema=parse_choices(CHOICES), n_threads=1)
    with llama_backend(demo_model, settings) as backend:
        job = processor.create_job("m", REVIEWS, settings=settings, cache="read-write")
        processor.process_batch(job, backend)
    backend = llama_backend(demo_model, settings)
    job = processor.create_job("m", REVIEWS, settings=settings, cache="read-write")
    results = processor.process_batch(job, backend)
    assert backend.loaded is None  # never opened: every answer was served
    assert all(r.cached_from and r.success and r.output in CHOICES for r in results)


@pytest.mark.model
def test_changed_records_are_exactly_the_misses(tmp_path):
    data = tmp_path / "reviews.csv"
    rows = [(f"r{i}", f"Review {i}: {REVIEWS[i % 4]}") for i in range(24)]
    data.write_text("id,review\n" + "".join(f'{i},"{text}"\n' for i, text in rows))
    flags = [
        "--template-text", "Label this review: {{ review }}", "--data", str(data),
        "--id-field", "id", "--choices", CHOICES, "--cache", "read-write", "--threads", "1",
    ]  # fmt: skip
    assert run_cli("run", *flags).returncode == 0
    changed = [(i, f"{text} (edited)" if n % 4 == 1 else text) for n, (i, text) in enumerate(rows)]
    data.write_text("id,review\n" + "".join(f'{i},"{text}"\n' for i, text in changed))
    again = run_cli("run", *flags)
    assert again.returncode == 0, again.stderr
    assert "cache: 18 of 24 answers served" in again.stderr and "; 6 to run" in again.stderr
    _, results = BatchProcessor().load_job(job_id_in(again.stderr))
    run_here = [r.custom_id for r in results if r.cached_from is None]
    assert run_here == [i for n, (i, _) in enumerate(rows) if n % 4 == 1]


@pytest.mark.model
def test_each_keyed_setting_changed_alone_gives_no_hits(demo_model, tmp_path, data_dir):
    """Run once; then each setting the key holds, changed alone, finds nothing, and the
    same settings find everything (so a miss is the key's doing)."""
    processor = BatchProcessor()
    base = GenerationSettings(
        schema=parse_choices(CHOICES), n_threads=1, max_tokens=8, seed=7, stop=["zz"]
    )
    with llama_backend(demo_model, base) as backend:
        job = processor.create_job("m", REVIEWS, settings=base, cache="read-write")
        processor.process_batch(job, backend)
    edited = tmp_path / "edited.gguf"
    shutil.copyfile(demo_model, edited)
    with edited.open("r+b") as model:  # one byte of the last tensor's data
        model.seek(-1, 2)
        last = model.read(1)
        model.seek(-1, 2)
        model.write(bytes([last[0] ^ 1]))
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(demo_model, copy)

    def hits(settings: GenerationSettings, model: Path = demo_model, **fields) -> int:
        made = processor.create_job("m", fields.pop("prompts", REVIEWS), settings=settings,
                                    cache="read", **fields)  # fmt: skip
        cache = JobCache.open(made, llama_backend(model, settings), pytest.fail)
        assert cache is not None
        try:
            return len(cache.serve(range(made.total_prompts)))
        finally:
            cache.close()

    assert hits(base) == 4
    assert hits(base, copy) == 4  # the same content under another name: the same model
    assert hits(replace(base, n_threads=2, n_ctx=4096)) == 4  # not keyed: not the answer's
    variants = {
        "model file": (base, edited),
        "temperature": (replace(base, temperature=0.5), demo_model),
        "top_p": (replace(base, top_p=0.5), demo_model),
        "seed": (replace(base, seed=8), demo_model),
        "max_tokens": (replace(base, max_tokens=9), demo_model),
        "stop": (replace(base, stop=["yy"]), demo_model),
        "system prompt": (replace(base, system_prompt="Be brief."), demo_model),
        "schema": (replace(base, schema=parse_choices("positive,negative")), demo_model),
        "schema in prompt": (replace(base, schema_prompt=False), demo_model),
        "batch invariant": (replace(base, batch_invariant=True), demo_model),
    }
    for name, (settings, model) in variants.items():
        assert hits(settings, model) == 0, name
    assert hits(base, prompts=[f"{text} " for text in REVIEWS]) == 0
    assert hits(replace(base, temperature=0.5), repeats=2) == 0


def test_a_server_jobs_key_holds_its_model_and_servers():
    settings = GenerationSettings()
    one = server_settings_from_text(["http://127.0.0.1:9001/v1", "http://127.0.0.1:9002/v1"], {})
    swapped = server_settings_from_text(
        ["http://127.0.0.1:9002/v1", "http://127.0.0.1:9001/v1"], {}
    )
    other = server_settings_from_text(["http://127.0.0.1:9003/v1"], {})
    job = BatchProcessor().create_job("served", ["hi"], settings=settings)

    def model(server, name="served"):
        return remote_backend(server, name).request_form(job).model

    assert model(one) == model(swapped)  # the order servers are listed in is no answer's
    assert model(one) != model(other)
    assert model(one) != model(one, "another")


@pytest.mark.model
def test_a_damaged_cache_is_one_warning_and_clear_removes_it(tmp_path):
    damaged = damaged_cache(tmp_path / "shared.db")
    before = damaged.read_bytes()
    env = {"TUI_BATCH_CACHE": str(damaged)}
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(REVIEWS[:2]) + "\n")
    done = run_cli("run", str(prompts), "--choices", CHOICES, "--cache", "read-write", env=env)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(damaged) in warnings[0]
    assert "the job runs without it" in warnings[0] and "Traceback" not in done.stderr
    assert "Completed: 2 succeeded" in done.stderr
    assert damaged.read_bytes() == before  # nothing is lost
    stats = run_cli("cache", "stats", env=env)
    assert stats.returncode == 2 and len(stats.stderr.strip().splitlines()) == 1
    cleared = run_cli("cache", "clear", env=env)
    assert cleared.returncode == 0 and "Removed" in cleared.stderr
    assert not damaged.exists()


def damaged_cache(path: Path) -> Path:
    """A real answer cache whose first page (its tables) is overwritten past the header."""
    with AnswerCache(path) as cache:
        answer = CachedAnswer("yes", None, "stop", 3, 1, None, 0.1, "job-1")
        cache.put_many([(b"k", "m", answer)])
    with path.open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff" * 1500)
    return path


def other_sqlite(path: Path) -> Path:
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('keep me')")
        connection.commit()
    return path


def test_cache_clear_removes_only_a_damaged_cache_of_its_own(tmp_path):
    """Another program's database, a job's checkpoint (with its -wal and -shm), a folder,
    a file of other bytes: each one line, exit 2, kept whole; a damaged tui-batch cache is
    removed."""
    processor = BatchProcessor(tmp_path / "data" / "checkpoints")
    job = processor.create_job("m", ["a", "b"])
    checkpoint = processor.store.path_for(job.job_id)
    for extra in ("-wal", "-shm"):
        Path(f"{checkpoint}{extra}").write_bytes(b"x" * 64)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside.txt").write_text("keep")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite " * 500)
    for path in (other_sqlite(tmp_path / "other.db"), checkpoint, folder, garbage):
        files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
        before = {p: p.read_bytes() for p in files}
        done = run_cli("cache", "clear", env={"TUI_BATCH_CACHE": str(path)})
        assert done.returncode == 2, (path, done.stderr)
        assert "nothing was deleted" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert {p: p.read_bytes() for p in files if p.exists()} == before, path
    damaged = damaged_cache(tmp_path / "mine.db")
    done = run_cli("cache", "clear", env={"TUI_BATCH_CACHE": str(damaged)})
    assert done.returncode == 0 and "Removed" in done.stderr, done.stderr
    assert not damaged.exists()


def test_cache_commands_refuse_bad_input_in_one_line(tmp_path):
    for args, said in [
        (["cache", "prune"], "give --older-than AGE, --max-size SIZE, or both"),
        (["cache", "prune", "--older-than", "soon"], "--older-than: expected a number"),
        (["cache", "prune", "--max-size", "big"], "--max-size: expected a size"),
        (["run", str(tmp_path / "p.txt"), "--cache", "sometimes"], "Cache: expected one of"),
    ]:
        (tmp_path / "p.txt").write_text("hi\n")
        done = run_cli(*args)
        assert done.returncode == 2, args
        assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    empty = run_cli("cache", "stats")
    assert empty.returncode == 0 and "No answer cache" in empty.stdout


@pytest.fixture(scope="module")
def logged_servers(demo_model: Path, tmp_path_factory) -> Iterator[tuple[list[str], Path]]:
    """Two real llama-cpp-python servers, each logging a line per request."""
    logs = tmp_path_factory.mktemp("server-logs")
    started = start_llama_servers(str(demo_model), 2, ALIAS, logs=logs)
    try:
        yield [url for url, _ in started], logs
    finally:
        for _, process in started:
            process.kill()
            process.wait(10)


def requests_in(logs: Path) -> int:
    return sum(
        path.read_text(errors="replace").count("POST /v1/chat/completions")
        for path in logs.glob("server-*.log")
    )


@pytest.mark.model
def test_two_real_servers_answer_once_and_two_jobs_write_the_cache_at_once(
    logged_servers, tmp_path
):
    (a, b), logs = logged_servers
    prompts = [tmp_path / "one.txt", tmp_path / "two.txt"]
    prompts[0].write_text("\n".join(REVIEWS) + "\n")
    prompts[1].write_text("\n".join(f"{text} Really." for text in REVIEWS) + "\n")

    def command(path: Path, mode: str) -> list[str]:
        return [
            sys.executable, "-m", "tui_batch", "run", str(path), "--server", a, "--server", b,
            "--model", ALIAS, "--schema", "mood: good|bad|meh", "--max-tokens", "40",
            "--cache", mode,
        ]  # fmt: skip

    # Two jobs writing the same cache at once.
    running = [
        subprocess.Popen(command(path, "write"), stderr=subprocess.PIPE, text=True)
        for path in prompts
    ]
    for process in running:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "cache: 4 new answers kept" in stderr
    sent = requests_in(logs)
    assert sent >= 8
    listing = json.loads(run_cli("cache", "stats", "--json").stdout)
    assert listing["answers"] == 8
    assert listing["models"][0]["model"] == f"{ALIAS} @ 2 servers"
    # Both again: every answer from the cache. What reaches a server is the check made
    # before a job (does a llama-cpp-python server cut off a streaming answer when a
    # second request comes?): at most one request each, never a prompt.
    for path in prompts:
        again = subprocess.run(command(path, "read-write"), capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert "cache: 4 of 4 answers served" in again.stderr
        _, results = BatchProcessor().load_job(job_id_in(again.stderr))
        assert all(r.cached_from and r.attempts == 0 and not r.endpoint for r in results)
    assert requests_in(logs) - sent <= 2 * 2
