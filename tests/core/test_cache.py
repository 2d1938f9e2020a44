"""The answer cache's core: its key, its file (kill -9, two writers, damage), what it
keeps and serves. A fake backend here injects what a real model rarely gives on cue
(an error, an answer that breaks the schema, an empty one); the real model and real
servers are in tests/cli/test_cache_cli.py."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_batch.core import events
from tui_batch.core.backend import CallableBackend, Completion, RequestForm
from tui_batch.core.cache.answers import AnswerCache, CachedAnswer
from tui_batch.core.cache.key import KeyMaker
from tui_batch.core.cache.upkeep import parse_age, parse_size, prune
from tui_batch.core.errors import CacheError, SettingsError
from tui_batch.core.jobfile import load_job_file
from tui_batch.core.jobs import GenerationSettings, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.stats import job_stats
from tui_batch.core.structured.schema import parse_choices, parse_schema

from support.checkpoints import made_before_checks

REPO = Path(__file__).resolve().parents[2]


def answer(text: str = "yes", job: str = "job1") -> CachedAnswer:
    return CachedAnswer(text, None, "stop", 5, 1, None, 0.5, job)


# The key ---------------------------------------------------------------------------------

SAMPLING = {
    "max_tokens": st.integers(1, 4096),
    "temperature": st.sampled_from([0.0, 0.2, 0.7, 1.5]),
    "top_p": st.sampled_from([0.5, 0.9, 0.95, 1.0]),
    "seed": st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    "stop": st.lists(st.text(min_size=1, max_size=4), max_size=3),
}
KEYED = st.fixed_dictionaries(
    {
        **SAMPLING,
        "model": st.text(max_size=20),
        "rendered": st.text(max_size=60),
        "batch_invariant": st.booleans(),
        "repeat": st.one_of(st.none(), st.integers(0, 99)),
        "schema": st.sampled_from([None, "a,b", "a,b,c", "n: int", "n: int 1..5"]),
    }
)


def key_of(fields: dict) -> bytes | None:
    schema = fields["schema"]
    made = None
    if schema is not None:
        made = parse_choices(schema) if "," in schema else parse_schema(schema)
    generation = GenerationSettings(
        max_tokens=fields["max_tokens"],
        temperature=fields["temperature"],
        top_p=fields["top_p"],
        seed=fields["seed"],
        stop=fields["stop"],
        batch_invariant=fields["batch_invariant"],
        schema=made,
    )
    prompt = Prompt("the text", repeat=fields["repeat"])
    return KeyMaker(fields["model"], generation).key(fields["rendered"], prompt)


@settings(max_examples=300, deadline=None)
@given(KEYED, st.data())
def test_any_change_of_a_keyed_field_changes_the_key(fields, data):
    fields["seed"] = fields["seed"] if fields["seed"] is not None else 1  # keyable
    name = data.draw(st.sampled_from(sorted(KEYED_NAMES)))
    other = data.draw(KEYED_FIELDS[name].filter(lambda v: v != fields[name]))
    changed = {**fields, name: other}
    if changed["seed"] is None and changed["temperature"] != 0:
        return  # not reproducible: never keyed at all (below)
    first, second = key_of(fields), key_of(changed)
    assert first is not None and second is not None
    assert first != second, name


KEYED_FIELDS = {
    **SAMPLING,
    "model": st.text(max_size=20),
    "rendered": st.text(max_size=60),
    "batch_invariant": st.booleans(),
    "repeat": st.one_of(st.none(), st.integers(0, 99)),
    "schema": st.sampled_from([None, "a,b", "a,b,c", "n: int", "n: int 1..5"]),
}
KEYED_NAMES = set(KEYED_FIELDS)


def test_a_sampled_answer_without_a_seed_has_no_key():
    sampled = GenerationSettings(temperature=0.7)
    assert KeyMaker("m", sampled).key("x", Prompt("x")) is None
    assert KeyMaker("m", replace(sampled, seed=3)).key("x", Prompt("x")) is not None
    # A prompt's own seed makes it reproducible; its own temperature is keyed.
    assert KeyMaker("m", sampled).key("x", Prompt("x", options={"seed": 1})) is not None
    greedy = KeyMaker("m", GenerationSettings())
    assert greedy.key("x", Prompt("x")) != greedy.key("x", Prompt("x", options={"top_p": 0.5}))


JOB_LINES = [
    "temperature = 0.0",
    "top_p = 0.9",
    "max_tokens = 33",
    "seed = 5",
    'stop = ["\\n", "END"]',
    'system = "Be brief."',
]


@settings(max_examples=40, deadline=None)
@given(st.permutations(JOB_LINES))
def test_the_order_of_a_job_files_keys_does_not_change_the_key(tmp_path_factory, order):
    folder = tmp_path_factory.mktemp("order")
    (folder / "p.txt").write_text("hello\n")
    text = '[input]\nprompts = "p.txt"\n[generation]\n' + "\n".join(order) + "\n"
    (folder / "job.toml").write_text(text)
    spec = RunSpec.from_values(load_job_file(folder / "job.toml"))
    key = KeyMaker("m", spec.generation).key("rendered", Prompt("hello"))
    first = KeyMaker(
        "m",
        GenerationSettings(
            temperature=0.0,
            top_p=0.9,
            max_tokens=33,
            seed=5,
            stop=["\n", "END"],
            system_prompt="Be brief.",
        ),
    ).key("rendered", Prompt("hello"))
    assert key == first


# The file --------------------------------------------------------------------------------


def test_answers_round_trip_and_a_damaged_entry_is_a_miss(tmp_path):
    path = tmp_path / "cache.db"
    with AnswerCache(path) as cache:
        cache.put_many([(b"k1", "model", answer("one")), (b"k2", "model", answer("two"))])
        found = cache.get_many([b"k1", b"k2", b"k3"])
        assert {k: a.response_text for k, a in found.items()} == {b"k1": "one", b"k2": "two"}
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())  # shared
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE answers SET tokens_input = 'lots' WHERE key = ?", (b"k1",))
    with AnswerCache(path) as cache:
        assert list(cache.get_many([b"k1", b"k2"])) == [b"k2"]
        figures = cache.figures()
    assert figures.answers == 2 and figures.hits == 3  # k1, k2, then k2 again
    assert figures.models[0].model == "model"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_cache_in_the_data_dir_is_owner_only(data_dir):
    AnswerCache(data_dir / "cache.db").close()
    assert oct((data_dir / "cache.db").stat().st_mode & 0o777) == "0o600"
    assert oct(data_dir.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize(
    "content, says",
    [
        (b"this is not a database at all" * 100, "not an SQLite file"),
        (None, "not a tui-batch answer cache"),
    ],
)
def test_a_file_that_is_not_a_cache_is_one_clear_error(tmp_path, content, says):
    path = tmp_path / "cache.db"
    if content is None:
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE notes (x)")
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(CacheError, match=says):
        AnswerCache(path)
    assert path.read_bytes() == before  # nothing is lost


def test_a_newer_format_is_refused(tmp_path):
    path = tmp_path / "cache.db"
    AnswerCache(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(CacheError, match="newer tui-batch"):
        AnswerCache(path)


def test_a_format_1_file_is_upgraded_and_keeps_its_entries_and_thoughts_after(tmp_path):
    path = tmp_path / "cache.db"
    old = CachedAnswer("Yes.", None, "stop", 3, 2, None, 0.5, "20260101-000000-aaaaaa")
    with AnswerCache(path) as cache:
        cache.put_many([(b"k1", "m", old)])
    with sqlite3.connect(path) as connection:  # as format 1 made it
        for column in ("reasoning", "reasoning_tokens"):
            connection.execute(f"ALTER TABLE answers DROP COLUMN {column}")
        connection.execute("PRAGMA user_version = 1")
    thought = replace(old, reasoning="easy one", reasoning_tokens=4)
    with AnswerCache(path) as cache:
        assert cache.get_many([b"k1"])[b"k1"] == old
        cache.put_many([(b"k2", "m", thought)])
        assert cache.get_many([b"k2"])[b"k2"] == thought


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tui_batch.core.cache.answers import AnswerCache, CachedAnswer
    name, rounds = sys.argv[2], int(sys.argv[3])
    with AnswerCache(Path(sys.argv[1])) as cache:
        for n in range(rounds):
            cache.put_many(
                (f"{name}-{n}-{i}".encode(), name, CachedAnswer("x" * 200, None, "stop", 1, 1,
                 None, 0.1, "job1")) for i in range(200)
            )
            print(n, flush=True)
    """
)


def _writer(path: Path, name: str, rounds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), name, str(rounds)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_kill_9_during_writes_leaves_a_readable_cache(tmp_path):
    path = tmp_path / "cache.db"
    process = _writer(path, "a", 100_000)
    assert process.stdout is not None
    for _ in range(5):  # a few commits done, more on their way
        process.stdout.readline()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    with AnswerCache(path) as cache:
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count = cache.count()
        assert count >= 5 * 200 and count % 200 == 0  # whole transactions only
        assert cache.get_many([b"a-0-0"])[b"a-0-0"].response_text == "x" * 200


def test_two_writers_at_once_both_land(tmp_path):
    path = tmp_path / "cache.db"
    AnswerCache(path).close()
    writers = [_writer(path, name, 30) for name in ("a", "b")]
    for process in writers:
        process.communicate(timeout=120)
        assert process.returncode == 0
    with AnswerCache(path) as cache:
        assert cache.count() == 2 * 30 * 200
        assert {m.model: m.answers for m in cache.figures().models} == {"a": 6000, "b": 6000}


def test_prune_by_age_then_by_size(tmp_path):
    path = tmp_path / "cache.db"
    with AnswerCache(path) as cache:
        cache.put_many((f"old{i}".encode(), "m", answer("y" * 500)) for i in range(300))
        with sqlite3.connect(path) as connection:
            connection.execute("UPDATE answers SET used = used - 30 * 86400")
        cache.put_many((f"new{i}".encode(), "m", answer("z" * 500)) for i in range(2000))
        done = prune(cache, parse_age("14d"), None)
        assert done.deleted == 300 and done.answers_left == 2000
        done = prune(cache, None, parse_size("400KB"))
        assert done.size_after <= 400_000
        assert 0 < done.answers_left < 2000


@pytest.mark.parametrize("text", ["", "14", "3 fortnights", "-1d", "d"])
def test_a_bad_age_is_refused(text):
    with pytest.raises(SettingsError, match="--older-than"):
        parse_age(text)


def test_sizes_read_as_people_write_them():
    assert parse_size("1GB") == 10**9
    assert parse_size("64KiB") == 65536
    assert parse_size("2.5 mb") == 2_500_000
    with pytest.raises(SettingsError, match="--max-size"):
        parse_size("lots")


# What is kept and served -----------------------------------------------------------------


class ScriptedBackend(CallableBackend):
    """A plain function's backend (its queue, one prompt a step) whose answers are
    `script(prompt text, attempt)`'s completions; it counts its calls and opens, and
    keys requests by the prompt's text (its `request_form`)."""

    def __init__(self, script: Callable[[str, int], Completion]) -> None:
        super().__init__(script)  # type: ignore[arg-type]  # called with the attempt too
        self.calls: list[str] = []
        self.opened = 0

    def open(self, settings: GenerationSettings) -> None:
        self.opened += 1

    def step(self) -> list[Completion]:
        if not self._queue:
            return []
        task = self._queue.popleft()
        self.calls.append(task.prompt.text)
        answer = self.execute_fn(task.prompt.text, task.attempt)  # type: ignore[call-arg]
        return [replace(answer, index=task.index)]

    def request_form(self, job):
        return RequestForm("scripted", "scripted", lambda prompt: prompt.text)


def scripted(text: str, attempt: int) -> Completion:
    if text == "error":
        return Completion(0, error="HTTP 500", retryable=False, finish_reason=None)
    if text == "cut":
        return Completion(0, response_text='"pos', finish_reason="length")
    if text == "empty":
        return Completion(0, response_text="", finish_reason="stop")
    if text == "invalid-then-ok":  # breaks the schema once, then is fixed with a new seed
        label = "maybe" if attempt == 1 else "pos"
        return Completion(0, response_text=label, finish_reason="stop")
    if text == "always-invalid":
        return Completion(0, response_text="maybe", finish_reason="stop")
    return Completion(0, response_text="pos", finish_reason="stop", tokens_input=9, tokens_output=1)


def run_twice(tmp_path, texts, mode: str = "read-write", schema: str | None = None):
    processor = BatchProcessor(tmp_path / "checkpoints")
    settings = GenerationSettings(schema=parse_choices(schema) if schema else None)
    runs = []
    for _ in range(2):
        backend = ScriptedBackend(scripted)
        job = processor.create_job("m", texts, settings=settings, cache=mode, invalid_retries=1)
        seen: list[events.BatchEvent] = []
        results = processor.process_batch(job, backend, on_event=seen.append)
        runs.append((job, results, backend, seen))
    return runs


def test_errors_cut_and_empty_answers_are_never_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TUI_BATCH_CACHE", str(tmp_path / "shared.db"))
    texts = ["fine", "error", "cut", "empty", "also fine"]
    (first, _, one, _), (second, results, two, seen) = run_twice(tmp_path, texts)
    assert one.calls == texts
    assert two.calls == ["error", "cut", "empty"]
    served = {r.prompt: r for r in results if r.cached_from is not None}
    assert set(served) == {"fine", "also fine"}
    assert all(r.cached_from == first.job_id and r.attempts == 0 for r in served.values())
    assert served["fine"].tokens_input == 9 and served["fine"].finish_reason == "stop"
    cached = next(e for e in seen if isinstance(e, events.CacheServed))
    assert (cached.served, cached.to_run) == (2, 3)
    stats = job_stats(BatchProcessor(tmp_path / "checkpoints").store.path_for(second.job_id))
    assert (stats.cached, stats.misses, stats.cached_tokens_input) == (2, 3, 18)
    assert stats.latency.count == stats.completed - 2  # served answers took no time here


def test_invalid_answers_and_answers_after_them_are_never_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TUI_BATCH_CACHE", str(tmp_path / "shared.db"))
    texts = ["fine", "invalid-then-ok", "always-invalid"]
    (_, _, one, _), (_, results, two, _) = run_twice(tmp_path, texts, schema="pos,neg")
    # Each invalid answer is run once more (with another seed than the key's).
    assert len(one.calls) == 5
    assert sorted(two.calls) == ["always-invalid"] * 2 + ["invalid-then-ok"] * 2
    assert [r.cached_from is not None for r in results] == [True, False, False]
    assert results[0].output == "pos" and results[2].invalid


def test_write_only_never_serves_and_read_only_never_stores(tmp_path, monkeypatch):
    monkeypatch.setenv("TUI_BATCH_CACHE", str(tmp_path / "shared.db"))
    texts = ["fine", "error", "also fine"]
    (_, _, one, _), (_, results, two, _) = run_twice(tmp_path, texts, mode="write")
    assert len(two.calls) == len(one.calls)
    assert not any(r.cached_from for r in results)
    with AnswerCache(tmp_path / "shared.db") as cache:
        assert cache.count() == 2
        cache.delete()
    (_, _, _, _), (_, results, _, _) = run_twice(tmp_path, texts, mode="read")
    assert not any(r.cached_from for r in results)
    with AnswerCache(tmp_path / "shared.db") as cache:
        assert cache.count() == 0


def test_all_served_never_opens_the_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("TUI_BATCH_CACHE", str(tmp_path / "shared.db"))
    processor = BatchProcessor(tmp_path / "checkpoints")
    texts = ["a", "b", "c"]
    processor.process_batch(
        processor.create_job("m", texts, cache="read-write"), ScriptedBackend(scripted)
    )
    backend = ScriptedBackend(scripted)
    job = processor.create_job("m", texts, cache="read-write")
    results = processor.process_batch(job, backend)
    assert backend.opened == 0 and backend.calls == []
    assert [r.response_text for r in results] == ["pos"] * 3
    _, saved = processor.load_job(job.job_id)
    assert all(r.cached_from for r in saved)


def test_a_damaged_cache_is_said_once_and_the_job_runs_without_it(tmp_path, monkeypatch):
    damaged = tmp_path / "shared.db"
    damaged.write_bytes(b"garbage" * 1000)
    monkeypatch.setenv("TUI_BATCH_CACHE", str(damaged))
    processor = BatchProcessor(tmp_path / "checkpoints")
    seen: list[events.BatchEvent] = []
    job = processor.create_job("m", ["a", "b"], cache="read-write")
    results = processor.process_batch(job, ScriptedBackend(scripted), on_event=seen.append)
    assert [r.success for r in results] == [True, True]
    problems = [e.message for e in seen if isinstance(e, events.CacheProblem)]
    assert len(problems) == 1 and "runs without it" in problems[0] and "\n" not in problems[0]
    assert damaged.read_bytes() == b"garbage" * 1000


def test_a_served_answer_is_checked_against_the_schema_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TUI_BATCH_CACHE", str(tmp_path / "shared.db"))
    processor = BatchProcessor(tmp_path / "checkpoints")
    settings = GenerationSettings(schema=parse_choices("pos,neg"))
    processor.process_batch(
        processor.create_job("m", ["a"], settings=settings, cache="read-write"),
        ScriptedBackend(scripted),
    )
    with sqlite3.connect(tmp_path / "shared.db") as connection:  # a person edits the file
        connection.execute("UPDATE answers SET response_text = 'banana'")
    backend = ScriptedBackend(scripted)
    job = processor.create_job("m", ["a"], settings=settings, cache="read-write")
    results = processor.process_batch(job, backend)
    assert backend.calls == ["a"] and results[0].cached_from is None


def test_results_of_an_older_checkpoint_read_without_a_cache_column(tmp_path):
    processor = BatchProcessor(tmp_path / "checkpoints")
    job = processor.create_job("m", ["a"])
    processor.process_batch(job, lambda text: "ok")
    path = processor.store.path_for(job.job_id)
    with sqlite3.connect(made_before_checks(path)) as connection:
        connection.execute("ALTER TABLE results DROP COLUMN cached_from")
        connection.execute("PRAGMA user_version = 6")
    _, results = processor.load_job(job.job_id)
    assert results[0].cached_from is None
    assert json.loads(json.dumps(job_stats(path).to_dict()))["cache"] is None
