"""Jobs side by side: matching on ids or text, states, sorts, filters, the word diff,
and `tui-batch compare` on two real runs of the demo model."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_batch.core.compare import Comparison, word_diff
from tui_batch.core.errors import CheckpointError, SettingsError
from tui_batch.core.jobs import BatchResult, Prompt
from tui_batch.core.processor import BatchProcessor

from conftest import EXAMPLES, run_cli


def two_jobs(tmp_path, prompts_a, prompts_b, answers_a, answers_b):
    """Two jobs; an answer of None leaves the prompt without a result, one starting
    with "!" fails with that message."""
    processor = BatchProcessor(tmp_path)
    jobs = []
    for prompts, answers in ((prompts_a, answers_a), (prompts_b, answers_b)):
        job = processor.create_job("m", prompts)
        results = [
            BatchResult(
                i,
                str(job.prompts[i]),
                "" if answer.startswith("!") else answer,
                success=not answer.startswith("!"),
                error_message=answer[1:] if answer.startswith("!") else None,
                duration=len(answer) / 10,
                tokens_output=len(answer),
            )  # fmt: skip
            for i, answer in enumerate(answers)
            if answer is not None
        ]
        processor.save_checkpoint(job, results)
        jobs.append(job)
    return jobs


def test_prompts_match_on_text_and_each_gets_a_state(tmp_path):
    a, b = two_jobs(
        tmp_path,
        ["q1", "q2", "q2", "q3", "q4", "only a"],
        ["q2", "q1", "q3", "q2", "q4", "only b"],
        ["yes", "A", "!boom", "a long answer here", None, "x"],
        ["A", "yes", "short", "B", "z", "y"],
    )
    with Comparison([a.checkpoint_file, b.checkpoint_file]) as comparison:
        summary = comparison.summary()
        assert summary.matched_on == "prompt text"
        assert summary.states == {
            "identical": 2, "failed": 1, "different": 1, "not run": 1, "missing": 2,
        }  # fmt: skip
        rows = comparison.rows()
        assert [(r.key, r.state) for r in rows] == [
            ("q1", "identical"),
            ("q2", "identical"),  # the first q2 of each, matched in order
            ("q2", "failed"),
            ("q3", "different"),
            ("q4", "not run"),
            ("only a", "missing"),
            ("only b", "missing"),
        ]
        assert [a.index for a in rows[1].answers] == [1, 0]
        assert rows[2].answers[0].error == "boom"
        assert comparison.rows(order="length")[0].key == "q3"
        assert [r.key for r in comparison.rows(state="identical")] == ["q1", "q2"]
        assert comparison.count(search="LONG") == 1  # case-insensitive, in answers too
        assert comparison.count(search="%") == 0  # a wildcard is a character
        assert [r.key for r in comparison.rows(offset=5, limit=1)] == ["only a"]
        sides = summary.jobs
        assert (sides[0].results, sides[0].succeeded, sides[1].results) == (5, 4, 6)


def test_custom_ids_match_when_every_prompt_has_one(tmp_path):
    a, b = two_jobs(
        tmp_path,
        [Prompt("Translate: cat", custom_id="r1"), Prompt("Translate: dog", custom_id="r2")],
        [
            Prompt("Say in French: dog", custom_id="r2"),
            Prompt("Say in French: cat", custom_id="r1"),
        ],
        ["chat", "chien"],
        ["chien", "chat"],
    )
    with Comparison([a.checkpoint_file, b.checkpoint_file]) as comparison:
        assert comparison.summary().matched_on == "custom id"
        rows = comparison.rows()
        assert [(r.key, r.state, r.prompt) for r in rows] == [
            ("r1", "identical", "Translate: cat"),
            ("r2", "identical", "Translate: dog"),
        ]


def test_three_jobs_and_bad_input(tmp_path):
    a, b = two_jobs(tmp_path, ["q"], ["q"], ["x"], ["x"])
    c, _ = two_jobs(tmp_path / "c", ["q"], ["q"], ["y"], ["y"])
    with Comparison([a.checkpoint_file, b.checkpoint_file, c.checkpoint_file]) as comparison:
        (row,) = comparison.rows()
        assert row.state == "different" and [x.text for x in row.answers] == ["x", "x", "y"]
    with pytest.raises(SettingsError, match="Compare two to 8 jobs"):
        Comparison([a.checkpoint_file])
    with pytest.raises(CheckpointError, match="Checkpoint not found"):
        Comparison([a.checkpoint_file, tmp_path / "nope.db"])
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"junk" * 100)
    with pytest.raises(CheckpointError):
        Comparison([a.checkpoint_file, junk])
    with (
        Comparison([a.checkpoint_file, b.checkpoint_file]) as comparison,
        pytest.raises(SettingsError, match="Unknown order"),
    ):
        comparison.rows(order="size")


WORDS = st.lists(st.sampled_from(["a", "b", "cat", " ", "\n", "é", "  "]), max_size=20)


@given(WORDS, WORDS)
def test_the_word_diff_joins_back_to_both_texts(left, right):
    a, b = "".join(left), "".join(right)
    runs = word_diff(a, b)
    assert "".join(text for op, text in runs if op != "+") == a
    assert "".join(text for op, text in runs if op != "-") == b


def test_the_word_diff_marks_words():
    assert word_diff("the cat sat", "the dog sat") == [
        ("=", "the "),
        ("-", "cat"),
        ("+", "dog"),
        ("=", " sat"),
    ]


@pytest.mark.model
def test_compare_two_real_runs(tmp_path):
    ids = []
    for temperature in ("0", "0.9"):
        done = run_cli(
            "run", str(EXAMPLES / "batch_prompts.txt"), "--max-tokens", "8", "--threads", "1",
            "--temperature", temperature, "--seed", "5",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        ids.append(done.stderr.split("Job ", 1)[1].split(":", 1)[0])
    shown = run_cli("compare", *ids, "--json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    states = document["summary"]["states"]
    assert sum(states.values()) == 25 and states["missing"] == states["failed"] == 0
    assert len(document["rows"]) == 25
    for row in document["rows"]:
        first, second = (answer["response"] for answer in row["answers"])
        assert (row["state"] == "identical") == (first == second)
    table = run_cli("compare", *ids, "--csv", "--out", str(tmp_path / "c.csv"))
    assert table.returncode == 0, table.stderr
    rows = list(csv.reader(io.StringIO((tmp_path / "c.csv").read_text())))
    assert rows[0][:4] == ["key", "prompt", "state", f"{ids[0]}_response"] and len(rows) == 26
    text = run_cli("compare", *ids, "--limit", "3", "--sort", "length")
    assert "25 prompts matched on prompt text" in text.stdout
    assert "... 22 more rows" in text.stdout
    bad = run_cli("compare", ids[0], "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("tui-batch: error: No checkpoint")


def test_jobs_with_a_schema_agree_field_by_field(tmp_path):
    from tui_batch.core.jobs import GenerationSettings
    from tui_batch.core.structured.schema import parse_schema

    schema = parse_schema("label: cat|dog, size: int 1..3, info: str")
    answers = [
        [{"label": "cat", "size": 1, "info": "a"}, {"label": "dog", "size": 2, "info": "b"},
         {"label": "cat", "size": 3, "info": "c"}, None],
        [{"label": "cat", "size": 2, "info": "a"}, {"label": "cat", "size": 2, "info": "b"},
         {"label": "cat", "size": 3, "info": "c"}, {"label": "dog", "size": 1, "info": "d"}],
    ]  # fmt: skip
    processor = BatchProcessor(tmp_path)
    paths = []
    for values in answers:
        job = processor.create_job(
            "m", ["p0", "p1", "p2", "p3"], settings=GenerationSettings(schema=schema)
        )
        results = [
            BatchResult(
                i,
                "",
                json.dumps(v) if v else "nope",
                success=v is not None,
                invalid=v is None,
                output=v,
                error_message=None if v else "$: not JSON",
            )  # fmt: skip
            for i, v in enumerate(values)
        ]
        processor.save_checkpoint(job, results)
        paths.append(job.checkpoint_file)
    with Comparison(paths) as comparison:
        summary = comparison.summary()
        agreement = {f.name: (f.agree, f.compared) for f in summary.fields}
        assert agreement == {"label": (2, 3), "size": (2, 3), "info": (3, 3)}
        assert summary.to_dict()["fields"][0] == {
            "field": "label", "agree": 2, "compared": 3, "rate": 66.67,
        }  # fmt: skip
        assert [row.key for row in comparison.iter_rows(differs="label")] == ["p1"]
        assert comparison.count(differs="size") == 1
        with pytest.raises(SettingsError, match="Unknown field 'nope' \\(known: label, size"):
            comparison.count(differs="nope")


def test_structured_answers_are_compared_field_by_field():
    from tui_batch.core.compare import ComparedAnswer, CompareRow
    from tui_batch.core.compare_fields import answers_shown, field_changes

    a = '{"sentiment": "positive", "stars": 4, "headline": "Great kettle, boils fast"}'
    b = '{"sentiment": "positive", "stars": 5, "headline": "Great kettle, boils fast"}'
    row = CompareRow(
        0, "r1", "p", "different", [ComparedAnswer(0, True, a), ComparedAnswer(0, True, b)]
    )
    assert answers_shown(row) == ["stars=4", "stars=5"]  # only what differs
    same = CompareRow(1, "r2", "p", "identical", [ComparedAnswer(1, True, a)] * 2)
    assert (
        answers_shown(same) == ["sentiment=positive stars=4 headline=Great kettle, boils fast"] * 2
    )
    failed = CompareRow(
        2, "r3", "p", "failed", [ComparedAnswer(2, True, a), ComparedAnswer(2, False, None, "boom")]
    )
    assert answers_shown(failed)[1] == "(failed: boom)"
    changes = field_changes(a, '{"stars": 5, "extra": [1, 2]}')
    assert [(c.name, c.before, c.after, c.same) for c in changes] == [
        ("sentiment", "positive", None, False),
        ("stars", "4", "5", False),
        ("headline", "Great kettle, boils fast", None, False),
        ("extra", None, "[1, 2]", False),
    ]
    assert field_changes(a, "not json") is None
