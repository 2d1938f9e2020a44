from __future__ import annotations

import csv
import json

import pytest

from tui_batch.core.errors import ExportError
from tui_batch.core.export import CSV_COLUMNS
from tui_batch.core.jobs import Prompt
from tui_batch.core.processor import BatchProcessor

TRICKY = [
    'He said "hi", then left',
    "line one\nline two\r\nline three",
    '=HYPERLINK("http://x")',
    "+1+1",
    "-2",
    "@SUM(A1)",
    "plain, with comma",
    "unicode: naïve ☃ 日本",
]


@pytest.fixture
def finished(tmp_path):
    processor = BatchProcessor(tmp_path / "cp")
    job = processor.create_job(
        "demo", [Prompt(t, custom_id=f"id-{i}") for i, t in enumerate(TRICKY)]
    )

    def echo(prompt: str):
        if prompt == "-2":
            raise ValueError("negative")
        return {"response_text": prompt, "tokens_input": 3, "tokens_output": 7}

    results = processor.process_batch(job, echo)
    return processor, job, results


def test_json_export_has_job_results_and_summary(finished, tmp_path):
    processor, job, results = finished
    path = processor.export_results(job, results, tmp_path / "out.json")
    document = json.loads(path.read_text())
    assert set(document) == {"job", "results", "summary"}
    assert document["job"]["job_id"] == job.job_id and "prompts" not in document["job"]
    assert document["summary"] == {"total": 8, "completed": 7, "failed": 1, "success_rate": 87.5}
    assert document["results"][1]["response_text"] == TRICKY[1]
    assert document["results"][4]["error_message"] == "ValueError: negative"


def test_csv_round_trip_keeps_commas_quotes_and_newlines(finished, tmp_path):
    processor, job, results = finished
    path = processor.export_results(
        job, results, tmp_path / "out.csv", "csv", neutralise_formulas=False
    )
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row[2] for row in rows[1:] if row[3] == "True"] == [t for t in TRICKY if t != "-2"]
    assert [row[1] for row in rows[1:]] == TRICKY
    failed = rows[5]
    assert failed[3] == "False" and failed[7] == "ValueError: negative"
    assert all(len(row[6].split(".")[1]) == 2 for row in rows[1:])  # duration, two decimals


def test_csv_neutralises_formulas_by_default(finished, tmp_path):
    processor, job, results = finished
    path = processor.export_results(job, results, tmp_path / "out.csv", "csv")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[2]["response"] == '\'=HYPERLINK("http://x")'
    assert rows[3]["response"] == "'+1+1" and rows[5]["response"] == "'@SUM(A1)"
    assert rows[4]["prompt"] == "'-2"
    assert rows[0]["response"] == TRICKY[0]


def test_jsonl_is_openai_batch_output(finished, tmp_path):
    processor, job, results = finished
    path = processor.export_results(job, results, tmp_path / "out.jsonl", "jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"id-{i}" for i in range(8)]
    ok = lines[0]
    assert ok["error"] is None
    assert ok["response"]["status_code"] == 200
    body = ok["response"]["body"]
    assert body["choices"][0]["message"] == {"role": "assistant", "content": TRICKY[0]}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    assert lines[4]["response"] is None
    assert lines[4]["error"]["message"] == "ValueError: negative"


def test_export_is_atomic_and_leaves_no_temp_files(finished, tmp_path):
    processor, job, results = finished
    target = tmp_path / "exports" / "out.json"
    target.parent.mkdir()
    target.write_text("old")
    with pytest.raises(ExportError, match="Unknown export format 'xml'"):
        processor.export_results(job, results, target, "xml")
    assert target.read_text() == "old"
    processor.export_results(job, results, target)
    assert json.loads(target.read_text())["summary"]["total"] == 8
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


@pytest.mark.parametrize(
    "cell",
    [
        "=1+1",
        '\uff1dHYPERLINK("http://x")',  # full-width =
        "\uff0b1",
        "\uff0d1",
        "\uff20SUM(A1)",
        "\x00=1+1",
        "\t=1+1",
        "\r=1+1",
        " =1+1",
        "  \u3000@SUM(A1)",
        "\n-1",
    ],
)
def test_every_formula_prefix_owasp_lists_is_neutralised(cell):
    from tui_batch.core.export import _guard

    assert _guard(cell, True) == "'" + cell
    assert _guard(cell, False) == cell


@pytest.mark.parametrize("cell", ["plain", " leading space", "1+1", "a=b", "", "\u00e9=x"])
def test_ordinary_cells_are_left_alone(cell):
    from tui_batch.core.export import _guard

    assert _guard(cell, True) == cell


def test_json_rows_hold_what_each_result_holds(tmp_path):
    """A result a line, written fast, holds the same as `to_dict` (and the empty job
    is valid JSON too)."""
    from tui_batch.core.jobs import Attempt, BatchResult

    processor = BatchProcessor(tmp_path / "checkpoints")
    job = processor.create_job("m", ["a", "b"])
    results = [
        BatchResult(0, "a", "x\ny", attempt_log=[Attempt("http://h/v1", 429, "HTTP 429")]),
        BatchResult(1, "b", "{}", output={"k": [1, "é"]}, cached_from="abc", score=1.0),
    ]
    out = processor.export_results(job, results, tmp_path / "r.json", "json")
    document = json.loads(out.read_text(encoding="utf-8"))
    for row, result in zip(document["results"], results, strict=True):
        assert row == json.loads(json.dumps(result.to_dict()))
    assert document["job"]["job_id"] == job.job_id and document["summary"]["total"] == 2
    empty = processor.export_results(job, [], tmp_path / "e.json", "json")
    assert json.loads(empty.read_text(encoding="utf-8"))["results"] == []


def test_schema_field_names_in_the_csv_header_are_neutralised_too(tmp_path):
    from tui_batch.core.jobs import BatchResult, GenerationSettings
    from tui_batch.core.structured.schema import parse_schema

    schema = parse_schema('{"type": "object", "properties": {"=cmd|calc": {"type": "string"}}}')
    processor = BatchProcessor(tmp_path / "cp")
    job = processor.create_job("m", ["a"], settings=GenerationSettings(schema=schema))
    result = BatchResult(0, "a", '{"=cmd|calc": "=1+1"}', True, output={"=cmd|calc": "=1+1"})
    path = processor.export_results(job, [result], tmp_path / "out.csv", "csv")
    with path.open(newline="", encoding="utf-8") as handle:
        header, row = list(csv.reader(handle))
    assert header[-1] == "'=cmd|calc" and row[-1] == "'=1+1"
