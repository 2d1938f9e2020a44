"""Schemas as people give them (short form, JSON Schema, choices), and every answer checked
against them."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_batch.core.errors import JobFileError, SettingsError
from tui_batch.core.jobfile import load_job_file
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.structured.check import CUT_OFF, check_answer, error_path
from tui_batch.core.structured.schema import (
    AnswerSchema,
    parse_choices,
    parse_schema,
    parse_short_form,
    to_short_form,
    value_at,
)

REVIEW = "sentiment: positive|negative|neutral, stars: int 1..5, headline: str ..60"


def test_the_short_form_becomes_a_strict_json_schema():
    schema = parse_schema(REVIEW)
    assert schema.kind == "short"
    assert schema.schema == {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            "headline": {"type": "string", "maxLength": 60},
        },
        "required": ["sentiment", "stars", "headline"],
        "additionalProperties": False,
    }
    assert schema.label_fields() == {"sentiment": ("positive", "negative", "neutral")}
    assert schema.describe() == REVIEW


def test_hints_lists_floats_bools_and_bare_names():
    schema = parse_schema(
        "tags: str[] # keywords, lower case\nscore: float 0..1 # how sure\nspam: bool\nnote"
    ).schema
    assert schema["properties"] == {
        "tags": {
            "type": "array",
            "items": {"type": "string", "description": "keywords, lower case"},
        },
        "score": {"type": "number", "minimum": 0.0, "maximum": 1.0, "description": "how sure"},
        "spam": {"type": "boolean"},
        "note": {"type": "string"},
    }


def test_on_one_line_a_hint_keeps_its_commas_until_a_name_follows():
    schema = parse_schema("n: int # a count, of things, 'roughly', b: str ..9 # x, y").schema
    assert schema["properties"]["n"]["description"] == "a count, of things, 'roughly'"
    assert schema["properties"]["b"] == {"type": "string", "maxLength": 9, "description": "x, y"}
    one = parse_schema("n: int # a count, b: bool").schema
    assert list(one["properties"]) == ["n", "b"]
    assert (
        to_short_form(
            {
                **one,
                "properties": {"n": {"type": "integer", "description": "a, b: c"}},
                "required": ["n"],
            }
        )
        is None
    )


def test_the_model_is_told_the_fields_and_hints():
    note = parse_schema("mood: happy|sad # the writer's, stars: int 1..5").note()
    assert "JSON object" in note
    assert "- mood: one of happy, sad (the writer's)" in note
    assert "- stars: a whole number from 1 to 5" in note
    assert "exactly one of" in parse_choices("yes,no").note()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("stars: integr", "field 'stars': unknown type 'integr'"),
        ("stars: int 5..1", "the range 5..1 is empty"),
        ("ok: bool 1..2", "is not a range"),
        ("stars: int 1.5..3", "'1.5' in '1.5..3' is not a whole number"),
        ("a: str, a: int", "field 'a' is given twice"),
        ("9lives: int", "field 1 (9lives: int): expected name: type"),
        ("a: x||y", "a choice between | is empty"),
        ("a: str[] 1..3", "[] goes at the end"),
        (" , ", "no fields given"),
        ('{"type": "object",', "Schema: not valid JSON: "),
        ('{"type": "objekt"}', "not a valid JSON Schema at $.type"),
        ('{"type": "object", "not": {"required": ["a"]}}', "'not' at $ cannot be enforced"),
        ('{"if": {}, "then": {}}', "'if' at $ cannot be enforced"),
        (
            '{"type": "object", "properties": {"t": {"type": "array", "uniqueItems": true}}}',
            "'uniqueItems' at $.properties.t cannot be enforced",
        ),
        ('{"type": "object", "patternProperties": {"^a": {}}}', "'patternProperties' at $"),
        ("[1, 2]", "field 1"),
        ("missing.json", "Schema: no such file missing.json"),
    ],
)
def test_every_mistake_is_one_line_naming_it(given, expected):
    with pytest.raises(SettingsError) as raised:
        parse_schema(given)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_property_named_like_a_keyword_is_a_property():
    schema = parse_schema('{"type": "object", "properties": {"not": {"type": "string"}}}')
    assert schema.fields == ("not",)


def test_a_schema_file_is_read_relative_to_its_folder(tmp_path):
    (tmp_path / "s.json").write_text('{"type": "object", "properties": {"x": {"type": "integer"}}}')
    schema = parse_schema("s.json", tmp_path)
    assert schema.kind == "file" and schema.source == str(tmp_path / "s.json")
    (tmp_path / "bad.json").write_text('{"type": "object",\n "properties": }')
    with pytest.raises(SettingsError, match=r"bad.json, line 2, column 16: not valid JSON"):
        parse_schema(str(tmp_path / "bad.json"))


@pytest.mark.parametrize(
    ("given", "expected"),
    [("a", "at least two labels"), ("a,,b", "none of them empty"), ("a,b,a", "'a' is given twice")],
)
def test_choices_mistakes(given, expected):
    with pytest.raises(SettingsError, match=expected):
        parse_choices(given)


def test_schema_and_choices_are_one_or_the_other():
    with pytest.raises(SettingsError, match="Schema and Choices: give one or the other"):
        RunSpec.from_values({"schema": "a: int", "choices": "x,y"})


# Answers -------------------------------------------------------------------------------


def test_answers_are_checked_with_the_first_error_and_where():
    schema = parse_schema(REVIEW)
    good = check_answer(schema, '{"sentiment": "positive", "stars": 4, "headline": "ok"}', "stop")
    assert good.valid and good.value["stars"] == 4
    high = check_answer(schema, '{"sentiment": "positive", "stars": 10, "headline": "ok"}', "stop")
    assert high.error == "$.stars: 10 is greater than the maximum of 5"
    assert error_path(high.error) == "$.stars"
    missing = check_answer(schema, '{"sentiment": "positive", "stars": 1}', "stop")
    assert missing.error == "$: 'headline' is a required property"
    prose = check_answer(schema, "Positive, negative or", "stop")
    assert prose.error.startswith("$: not JSON: Expecting value (line 1, column 1)")
    cut = check_answer(schema, '{"sentiment": "posi', "length")
    assert cut.error == CUT_OFF and error_path(cut.error) == "cut off"


def test_a_choice_is_its_label_plain_or_as_a_json_string():
    schema = parse_choices("positive,negative,neutral")
    assert check_answer(schema, " negative\n", "stop").value == "negative"
    assert check_answer(schema, '"neutral"', "stop").value == "neutral"
    assert check_answer(schema, "Positive", "stop").error == (
        "$: 'Positive' is not one of positive, negative, neutral"
    )


# Hypothesis: the short form, and answers ------------------------------------------------

_NAMES = st.text(string.ascii_lowercase + "_", min_size=1, max_size=8)
_LABELS = st.lists(
    st.text(string.ascii_letters + string.digits + " -", min_size=1, max_size=8).map(str.strip),
    min_size=2,
    max_size=4,
    unique=True,
).filter(lambda labels: all(labels) and len(set(labels)) == len(labels))


@st.composite
def field_specs(draw) -> str:
    kind = draw(st.sampled_from(["str", "int", "float", "bool", "choices"]))
    if kind == "choices":
        text = "|".join(draw(_LABELS))
    elif kind == "bool":
        text = "bool"
    else:
        low = draw(st.none() | st.integers(0, 50))
        high = draw(st.none() | st.integers(50, 100))
        shown = ["" if bound is None else str(bound) for bound in (low, high)]
        text = kind if low is None and high is None else f"{kind} {shown[0]}..{shown[1]}"
    if draw(st.booleans()):
        text += "[]"
    return text


@st.composite
def short_forms(draw) -> str:
    names = draw(st.lists(_NAMES, min_size=1, max_size=5, unique=True))
    hints = draw(st.booleans())
    parts = []
    for name in names:
        part = f"{name}: {draw(field_specs())}"
        if hints and draw(st.booleans()):
            part += " # " + draw(st.text(string.ascii_letters + " ,.'", min_size=1, max_size=20))
        parts.append(part.strip())
    return ("\n" if hints else ", ").join(parts)


@given(short_forms())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_the_short_form_round_trips_through_json_schema(text):
    schema = parse_short_form(text)
    again = to_short_form(schema.schema)
    assert again is not None
    assert parse_short_form(again).schema == schema.schema
    assert AnswerSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def _value_for(schema: dict):
    """A strategy of values valid for one field's schema."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "array":
        return st.lists(_value_for(schema["items"]), max_size=3)
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -1000), schema.get("maximum", 1000))
    if kind == "number":
        return st.floats(schema.get("minimum", -1e6), schema.get("maximum", 1e6), allow_nan=False)
    low = schema.get("minLength", 0)
    return st.text(min_size=low, max_size=schema.get("maxLength", low + 30))


@st.composite
def answers(draw):
    schema = parse_short_form(draw(short_forms()))
    value = {name: draw(_value_for(field)) for name, field in schema.schema["properties"].items()}
    return schema, value


def _mutated(schema: dict, value):
    """A value the field's schema refuses."""
    if "enum" in schema:
        return "".join(schema["enum"]) + "!"
    kind = schema["type"]
    if kind == "array":
        return "not a list"
    if kind == "boolean":
        return "yes"
    if kind in ("integer", "number"):
        if "maximum" in schema:
            return schema["maximum"] + 1
        if "minimum" in schema:
            return schema["minimum"] - 1
        return str(value)
    if "maxLength" in schema:
        return "x" * (schema["maxLength"] + 1)
    return 12


@given(answers(), st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_a_value_valid_for_the_schema_is_accepted_and_one_mutated_out_of_it_is_not(drawn, data):
    schema, value = drawn
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans()))
    checked = check_answer(schema, text, "stop")
    assert checked.valid and checked.value == value
    name = data.draw(st.sampled_from(list(value)))
    broken = {**value, name: _mutated(schema.schema["properties"][name], value[name])}
    refused = check_answer(schema, json.dumps(broken), "stop")
    assert not refused.valid
    assert error_path(refused.error) in (f"$.{name}", f"$['{name}']")
    extra = check_answer(schema, json.dumps({**value, "zz_extra": 1}), "stop")
    assert not extra.valid


def test_columns_of_an_answer_nested_and_not():
    schema = parse_schema(
        '{"type": "object", "properties": {"a": {"type": "object", "properties": '
        '{"b": {"type": "integer"}, "c": {"type": "string"}}}, "d": {"type": "array"}}}'
    )
    assert schema.columns() == [("a.b", ("a", "b")), ("a.c", ("a", "c")), ("d", ("d",))]
    assert value_at({"a": {"b": 1}}, ("a", "b")) == 1
    assert value_at({"a": 3}, ("a", "b")) is None
    assert parse_choices("x,y").columns() == [("label", ())]


def test_json_nested_too_deeply_or_not_json_at_all_is_one_line(tmp_path):
    deep = '{"a": ' + "[" * 5000
    with pytest.raises(SettingsError, match="^Schema: nested too deeply to read$"):
        parse_schema(deep)
    nested: dict = {"type": "object"}
    inner = nested
    for _ in range(300):
        inner["properties"] = {"x": {"type": "object"}}
        inner = inner["properties"]["x"]
    (tmp_path / "deep.json").write_text(json.dumps(nested))
    with pytest.raises(SettingsError, match="deep.json: nested too deeply to check$"):
        parse_schema(str(tmp_path / "deep.json"))
    job = tmp_path / "job.toml"  # a TOML table may hold what JSON cannot: a date
    job.write_text('[generation.schema]\ntype = "object"\nwhen = 1979-05-27\n')
    with pytest.raises(JobFileError, match="a JSON Schema holds JSON values only"):
        load_job_file(job)
