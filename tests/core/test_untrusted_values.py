"""Values from outside that Python reads but JSON cannot hold, and regular expressions
that backtrack for ever: each is an invalid answer, a wrong score or one line, and the
job goes on; nothing tui-batch writes reads back as damaged."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tui_batch.backends.remote.backend import RemoteBackend
from tui_batch.core.bounded_regex import RegexProblem, search
from tui_batch.core.cache.answers import AnswerCache, CachedAnswer
from tui_batch.core.compare import Comparison
from tui_batch.core.errors import DataFileError, SettingsError
from tui_batch.core.export import export_results
from tui_batch.core.jobs import GenerationSettings, JobStatus, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.stats import job_stats
from tui_batch.core.structured.check import check_answer
from tui_batch.core.structured.schema import answer_validator, parse_schema
from tui_batch.core.templates.records import iter_records

from support.fake_server import FakeServer
from support.remote import settings

EVIL = "^(a|aa)+$"
# Against EVIL, `re` backtracks for longer than anyone waits (2**40 paths).
EVIL_TEXT = "a" * 40 + "b"
SCHEMA = parse_schema(
    json.dumps(
        {
            "type": "object",
            "properties": {
                "x": {"type": "number"},
                "s": {"type": "string"},
                "p": {"type": "string", "pattern": EVIL},
            },
        }
    )
)


def strict_json(text: str):
    """JSON as a strict reader reads it: NaN and infinities are not JSON."""

    def refuse(name):
        raise ValueError(f"{name} in what tui-batch wrote")

    return json.loads(text, parse_constant=refuse)


def test_a_regex_that_backtracks_is_bounded():
    with pytest.raises(RegexProblem, match="longer than"):
        search(EVIL, EVIL_TEXT)
    assert search(EVIL, "aaaa")
    scoring = Scoring("want", "regex")
    assert scoring.score(EVIL, EVIL_TEXT, None, None) == 0.0
    assert scoring.score(EVIL, "aaaa", None, None) == 1.0


@pytest.mark.parametrize(
    "pattern", ["a{99999999999}", "(" * 5000 + ")" * 5000, "(unclosed", "x" * 20_000]
)
def test_patterns_python_cannot_compile_are_one_line(pattern):
    problem = Scoring("want", "regex").problem(pattern)
    assert problem is not None and "is not a regular expression" in problem
    assert "\n" not in problem
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}
    with pytest.raises(SettingsError, match="pattern at .* is not a regular expression"):
        parse_schema(json.dumps(schema))


def test_a_format_regex_value_python_cannot_compile_is_an_error_not_a_crash():
    # llguidance refuses `format: regex` in a job's schema; the answers' validator still
    # bounds it, as it does `pattern`.
    validator = answer_validator({"type": "string", "format": "regex"})
    assert [e.message for e in validator.iter_errors("a{99999999999}")]
    assert not list(validator.iter_errors("a+b"))


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ('{"x": NaN}', "NaN is not a JSON number"),
        ('{"x": Infinity}', "Infinity is not a JSON number"),
        ('{"x": -Infinity}', "-Infinity is not a JSON number"),
        ('{"x": 1e400}', "1e400 is past the range"),
        ('{"x": ' + "9" * 5000 + "}", "integer of 5,000 digits"),
        ('{"p": "' + EVIL_TEXT + '"}', "matching took longer"),
    ],
)
def test_values_json_cannot_hold_are_invalid_answers(answer, said):
    checked = check_answer(SCHEMA, answer, "stop")
    assert not checked.valid and said in checked.error


def test_a_lone_surrogate_in_an_answer_becomes_a_replacement_character():
    checked = check_answer(SCHEMA, '{"s": "\\ud800 and \\udfff", "\\udabc": 1}', "stop")
    assert checked.valid
    assert checked.value == {"s": "\ufffd and \ufffd", "\ufffd": 1}


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    ],
)
def test_a_schema_that_refers_to_itself_without_end_is_refused(schema):
    with pytest.raises(SettingsError, match="leads back to itself"):
        parse_schema(json.dumps(schema))


def test_a_recursive_schema_checks_a_deep_answer_without_ending_the_run():
    tree = parse_schema(
        json.dumps(
            {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}},
            }
        )
    )
    assert check_answer(tree, '{"kids": [{"kids": []}]}', "stop").valid
    deep = '{"kids": [' * 300 + "{}" + "]}" * 300
    checked = check_answer(tree, deep, "stop")  # valid, or invalid with a reason
    assert checked.valid or "nested too deeply" in checked.error


@pytest.mark.parametrize(
    "text", ['{"type": "number", "maximum": 1e999}', '{"enum": ["\\ud800"], "type": "string"}']
)
def test_inline_schemas_holding_what_no_file_can_are_one_line(text):
    with pytest.raises(SettingsError) as caught:
        parse_schema(text)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400"])
def test_a_data_file_value_json_cannot_hold_names_its_line(tmp_path, value):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"q": "fine", "n": 1}\n{"q": "x", "n": ' + value + "}\n")
    with pytest.raises(DataFileError, match="line 2"):
        list(iter_records(data))
    array = tmp_path / "rows.json"
    array.write_text('[{"q": "fine"}, {"q": "x", "n": ' + value + "}]")
    with pytest.raises(DataFileError, match="record 2"):
        list(iter_records(array))


def test_a_lone_surrogate_in_a_data_file_becomes_a_replacement_character(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"q": "a \\ud800 b"}\n')
    ((_, record),) = list(iter_records(data))
    assert record == {"q": "a \ufffd b"}


def test_a_cache_entry_json_cannot_hold_is_a_miss(tmp_path):
    with AnswerCache(tmp_path / "cache.db") as cache:
        answer = CachedAnswer("{}", {"x": 1}, "stop", 3, 2, None, 0.1, "job-1")
        cache.put_many([(b"k1", "m", answer), (b"k2", "m", answer)])
        connection = sqlite3.connect(tmp_path / "cache.db")
        connection.execute("UPDATE answers SET output = ? WHERE key = ?", ('{"x": NaN}', b"k1"))
        connection.commit()
        connection.close()
        assert set(cache.get_many([b"k1", b"k2"])) == {b"k2"}


@pytest.mark.parametrize("expected", [10**400, "1" + "0" * 400])
def test_a_400_digit_expected_number_is_one_line_and_an_answer_is_wrong(expected):
    scoring = Scoring("want", "number")
    assert "past the range" in scoring.problem(expected)
    assert scoring.judge({"want": 5}, True, False, "1" + "0" * 400, None, None) == (0.0, 5)
    field = Scoring("want", "json-field", "n")
    answer = '{"n": ' + "1" * 400 + "}"
    assert field.judge({"want": 5}, True, False, answer, None, None) == (0.0, 5)
    fields = Scoring("want", "fields")
    assert fields.judge({"want": '{"n": 5}'}, True, False, answer, None, None)[0] == 0.0


def test_a_server_answering_what_json_cannot_hold_leaves_a_job_that_reads_back(tmp_path):
    """A real job on our server: each answer invalid or cleaned, the job completes, and
    its stats, comparison and JSON export read it."""
    answers = [
        '{"x": NaN}',
        '{"x": Infinity}',
        '{"x": 1e400}',
        '{"s": "\\ud800"}',
        '{"p": "' + EVIL_TEXT + '"}',
        '{"x": 1.5}',
    ]
    processor = BatchProcessor(tmp_path / "checkpoints")
    prompts = [Prompt(f"q{i}", variables={"want": EVIL}) for i in range(len(answers))]
    with FakeServer() as fake:
        fake.script.extend(['say:{"x": 1}'] * 3)  # the schema-form probe's three asks
        fake.script.extend(f"say:{answer}" for answer in answers)
        job = processor.create_job(
            "fake-model",
            prompts,
            server=settings(fake.url, concurrency=1),  # the script's answers in order
            settings=GenerationSettings(schema=SCHEMA, seed=3),
            invalid_retries=0,
            scoring=Scoring("want", "regex"),
        )
        with RemoteBackend(settings(fake.url, concurrency=1), "fake-model") as backend:
            results = processor.process_batch(job, backend)
    assert job.status is JobStatus.COMPLETED
    by_index = {r.prompt_index: r for r in results}
    assert [by_index[i].invalid for i in range(6)] == [True, True, True, False, True, False]
    assert by_index[3].output == {"s": "\ufffd"}
    assert "matching took longer" in by_index[4].error_message
    # Read back: the job, its figures, a comparison, an export that is JSON.
    loaded, saved = processor.load_job(job.job_id)
    assert len(saved) == 6
    path = processor.store.path_for(job.job_id)
    assert job_stats(path).total == 6
    with Comparison([path, path]) as comparison:
        assert comparison.summary().rows == 6
        comparison.rows()
    out = tmp_path / "out.json"
    export_results(loaded, saved, out, "json")
    document = strict_json(out.read_text(encoding="utf-8"))
    assert len(document["results"]) == 6
