"""Prompt templates and their data files: values inserted verbatim, never rendered
twice, a missing variable an error with its record, the sandbox closed, data streamed."""

from __future__ import annotations

import json
import re
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_batch.core.errors import DataFileError, TemplateError
from tui_batch.core.templates import records
from tui_batch.core.templates.records import iter_records
from tui_batch.core.templates.template import MAX_REPORTED, PromptTemplate, render_all, validate

# Text that looks like template syntax, or breaks naive parsers.
TRICKY = st.text(
    alphabet=st.sampled_from(list("{}%#ab \n\t\"'\\,é漢🙂")) | st.characters(), max_size=40
)


@given(TRICKY, TRICKY)
def test_values_are_inserted_verbatim_and_never_rendered_again(a, b):
    template = PromptTemplate("Review: {{ a }}\nNotes: {{ b }}!")
    assert template.render({"a": a, "b": b}) == f"Review: {a}\nNotes: {b}!"


def test_a_value_that_looks_like_a_template_stays_text():
    template = PromptTemplate("Classify: {{ review }}")
    assert template.render({"review": "{{ 7*7 }} {% if 1 %}x{% endif %}"}) == (
        "Classify: {{ 7*7 }} {% if 1 %}x{% endif %}"
    )


def test_missing_variables_are_reported_with_their_records():
    template = PromptTemplate("{{ title }}: {{ body }}")
    assert template.variables == {"title", "body"}
    rows = [(n, {"title": "t", "body": "b"}) for n in range(1, 4)]
    rows += [(n, {"title": "t"}) for n in range(4, 12)]
    found = validate(template, rows)
    assert (found.rendered, found.failed) == (3, 8) and not found.ok
    assert found.problems[0] == "record 4: no 'body' (the template uses it; the record has: title)"
    assert len(found.problems) == MAX_REPORTED
    assert found.summary().endswith("... and 3 more")
    with pytest.raises(TemplateError, match="record 9: 'body' is undefined"):
        template.render({"title": "t"}, number=9)


def test_a_missing_key_inside_a_value_is_an_error_not_an_empty_string():
    template = PromptTemplate("{{ row.name }}")
    with pytest.raises(TemplateError, match="has no attribute 'name'"):
        template.render({"row": {}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ ''.__class__.__mro__ }}", "not allowed in a template"),
        ("{{ cycler.__init__.__globals__ }}", "not allowed in a template"),
        ("{{ x.append(1) }}", "not allowed in a template"),
        ("{% include '/etc/passwd' %}", "no loader"),
        ("{{ x | nosuchfilter }}", "line 1: No filter named 'nosuchfilter'"),
        ("Hello {{ x", "line 1: unexpected end of template"),
    ],
)
def test_escapes_and_mistakes_are_one_line_errors(text, expected):
    with pytest.raises(TemplateError, match=expected):
        PromptTemplate(text).render({"x": [1]})


def test_empty_renders_are_counted():
    found = validate(PromptTemplate("{{ text }}"), [(1, {"text": "  "}), (2, {"text": "x"})])
    assert (found.rendered, found.empty, found.ok) == (2, 1, True)


def test_csv_with_a_bom_quoted_newlines_and_commas(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(
        '\ufeffid,review\n1,"Great, really.\nWould buy again"\n\n2,"She said ""no"""\n'.encode()
    )
    assert list(iter_records(path)) == [
        (1, {"id": "1", "review": "Great, really.\nWould buy again"}),
        (2, {"id": "2", "review": 'She said "no"'}),
    ]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.csv", "a,b\n1,2,3\n", "line 2 (record 1): 3 fields, the header has 2"),
        ("a.csv", "a,a\n1,2\n", "column 'a' appears twice"),
        ("a.csv", "", "empty, expected a header row"),
        ("a.jsonl", '{"a": 1}\n\n[1]\n', "line 3: expected an object, got list"),
        ("a.jsonl", '{"a": 1}\n{"a": \n', "line 2: not JSON"),
        ("a.json", '{"a": 1}', "expected a JSON array of objects"),
        ("a.json", '[{"a": 1}, 2]', "record 2: expected an object, got int"),
        ("a.json", '[{"a": 1} {"a": 2}]', "after record 1, expected ',' or ']'"),
        ("a.json", '[{"a": 1}, {"a": ', "record 2: not JSON"),
        ("a.xlsx", "", "unknown data format '.xlsx'"),
    ],
)
def test_malformed_data_files_say_where(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFileError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        list(iter_records(path))


def test_a_missing_or_binary_data_file(tmp_path):
    with pytest.raises(DataFileError, match="Data file not found"):
        list(iter_records(tmp_path / "nope.csv"))
    (tmp_path / "b.csv").write_bytes(b"a\n\xff\xfe\n")
    with pytest.raises(DataFileError, match="not UTF-8"):
        list(iter_records(tmp_path / "b.csv"))


def test_a_json_array_is_read_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "_CHUNK", 7)
    rows = [{"i": i, "text": "{{x}} " * (i % 5), "nested": {"k": [i]}} for i in range(60)]
    path = tmp_path / "a.json"
    path.write_text(" [\n" + ",\n ".join(json.dumps(r) for r in rows) + "\n] ", encoding="utf-8")
    assert [record for _, record in iter_records(path)] == rows


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_100_mb_data_file_is_streamed(tmp_path, suffix):
    """Memory holds a record, not the file: 100 MB read with a few MB at most."""
    path = tmp_path / f"big{suffix}"
    text = "x" * 100_000
    with path.open("w", encoding="utf-8") as out:
        if suffix == ".csv":
            out.write("id,text\n")
            out.writelines(f"{i},{text}\n" for i in range(1000))
        elif suffix == ".jsonl":
            out.writelines(json.dumps({"id": i, "text": text}) + "\n" for i in range(1000))
        else:
            out.write(
                "[" + ",".join(json.dumps({"id": i, "text": text}) for i in range(1000)) + "]"
            )
    assert path.stat().st_size > 100_000_000
    template = PromptTemplate("{{ id }} {{ text[:10] }}")
    tracemalloc.start()
    try:
        count = sum(
            1 for item in render_all(template, iter_records(path)) if not isinstance(item, str)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 1000
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_front_matter_sets_the_system_prompt_and_per_record_options():
    template = PromptTemplate(
        "+++\n"
        'system = "You review {{ product }}s."\n'
        'max_tokens = "{{ budget }}"\n'
        "temperature = 0.5\n"
        'stop = ["\\n"]\n'
        "+++\n"
        "Review: {{ review }}\n",
        "t.jinja",
    )
    assert template.variables == {"product", "budget", "review"}
    text, system, options = template.render_parts(
        {"product": "{{ lamp }}", "budget": " 12 ", "review": "ok"}, 3
    )
    assert (text, system) == ("Review: ok\n", "You review {{ lamp }}s.")
    assert options == {"temperature": 0.5, "stop": ["\n"], "max_tokens": 12}
    with pytest.raises(TemplateError, match=r"t.jinja, record 4: max_tokens: Max tokens: exp"):
        template.render_parts({"product": "p", "budget": "lots", "review": "r"}, 4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+++\nmodel = 'x'\n+++\nhi", "t, line 2: unknown front matter key 'model'"),
        ("+++\n\nmax_tokens = 0\n+++\nhi", "t, line 3: Max tokens: must be at least 1"),
        ("+++\nsystem = 3\n+++\nhi", "t, line 2: system must be text"),
        ("+++\nsystem = '{{ a'\n+++\nhi", "t, line 2: unexpected end of template"),
        ("+++\nx = = 1\n+++\nhi", "t, line 2: front matter: Invalid value"),
        ("+++\nmax_tokens = 3\nhi {{ a }}", "t, line 1: the front matter opened by +++ is never"),
        ("+++\n+++\n\n{{ a }", "t, line 4: unexpected '}'"),
    ],
)
def test_front_matter_mistakes_name_the_line(text, expected):
    with pytest.raises(TemplateError) as caught:
        PromptTemplate(text, "t")
    assert str(caught.value).startswith(expected)


def test_rendered_prompts_carry_ids_variables_and_the_source(tmp_path):
    from tui_batch.core.templates.render import render_prompts

    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"id": 7, "text": "a", "meta": {"n": 1.5}}\n{"id": 8, "text": "  "}\n'
        '{"id": 9, "text": "{{ x }}", "meta": null}\n'
    )
    rendered = render_prompts(PromptTemplate("{{ text }}"), data, id_field="id")
    assert [(p.custom_id, p.text, p.line) for p in rendered.prompts] == [
        ("7", "a", 1),
        ("9", "{{ x }}", 3),
    ]
    assert rendered.prompts[0].variables == {"id": 7, "text": "a", "meta": {"n": 1.5}}
    assert rendered.warnings == ["record 2: empty prompt skipped"]
    source = rendered.source
    assert (source.records, source.id_field, source.data_file) == (3, "id", str(data))
    assert source.changes() == []
    data.write_text(data.read_text() + '{"id": 10, "text": "b"}\n')
    assert source.changes() == [f"the data file {data} changed since the job was made"]
    data.unlink()
    assert source.changes() == [f"Data file not found: {data} (the job was made from it)"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"id": 1, "t": "a"}\n{"id": 1, "t": "b"}\n', "record 2: duplicate id '1' in column"),
        ('{"id": "", "t": "a"}\n', "record 1: the id in column 'id' is empty"),
        ('{"t": "a"}\n', "record 1: no id column 'id' (found: t)"),
    ],
)
def test_ids_must_be_there_and_unique(tmp_path, content, expected):
    from tui_batch.core.templates.render import render_prompts

    data = tmp_path / "d.jsonl"
    data.write_text(content)
    with pytest.raises(TemplateError, match=f"^{re.escape(str(data))}, {re.escape(expected)}"):
        render_prompts(PromptTemplate("{{ t }}"), data, id_field="id")


def test_row_holds_fields_whose_names_are_not_identifiers():
    template = PromptTemplate('{{ row["Product Name"] }}: {{ review }}')
    assert template.missing({"review": "ok"}) == []
    assert template.render({"Product Name": "{{ kettle }}", "review": "ok"}) == "{{ kettle }}: ok"
    with pytest.raises(TemplateError, match="record 2: 'dict object' has no attribute 'Product"):
        template.render({"review": "ok"}, 2)
    assert PromptTemplate("{{ row }}").render({"row": "mine"}) == "mine"  # a field wins


def test_an_unknown_data_format_is_said_before_the_file_is_read(tmp_path):
    from tui_batch.core.templates.render import render_prompts

    with pytest.raises(DataFileError, match=r"unknown data format '\.xlsx'"):
        render_prompts(PromptTemplate("{{ a }}"), tmp_path / "missing.xlsx")


def test_rendering_stops_when_cancelled(tmp_path):
    import threading

    from tui_batch.core.templates.render import render_prompts

    data = tmp_path / "d.jsonl"
    data.write_text('{"a": 1}\n' * 10)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TemplateError, match="Rendering stopped"):
        render_prompts(PromptTemplate("{{ a }}"), data, cancel=cancel)
