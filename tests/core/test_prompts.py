from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_batch.core.errors import PromptFileError
from tui_batch.core.prompts import load_prompt_file, prompts_from_lines

from conftest import EXAMPLES


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_example_txt_has_25_prompts_with_comments_and_blanks_ignored():
    loaded = load_prompt_file(EXAMPLES / "batch_prompts.txt")
    assert len(loaded.prompts) == 25
    assert not any(p.text.startswith("#") for p in loaded.prompts)
    assert loaded.prompts[0].text.startswith("Explain what a linked list is")
    assert loaded.prompts[0].line == 5
    assert loaded.warnings == []


def test_example_json_and_openai_jsonl_load():
    as_json = load_prompt_file(EXAMPLES / "batch_prompts.json").prompts
    assert as_json[0].custom_id == "q01" and as_json[0].system
    requests = load_prompt_file(EXAMPLES / "openai_batch.jsonl").prompts
    assert len(requests) == 10
    assert requests[0].custom_id == "request-1"
    assert requests[0].system == "You are a helpful assistant. Be brief."
    assert requests[0].options == {"max_tokens": 32}
    assert requests[0].text == "What is the difference between GET and POST requests?"


def test_txt_strips_whitespace_and_skips_comments(tmp_path):
    path = write(tmp_path, "p.txt", "  # comment\n\n   first   \n\t second\n#x\n")
    assert [(p.text, p.line) for p in load_prompt_file(path).prompts] == [
        ("first", 3),
        ("second", 4),
    ]


def test_utf8_bom_is_accepted(tmp_path):
    path = write(tmp_path, "p.txt", "\ufeffhello\n".encode())
    assert load_prompt_file(path).prompts[0].text == "hello"
    path = write(tmp_path, "p.json", '\ufeff["a"]'.encode())
    assert load_prompt_file(path).prompts[0].text == "a"


def test_json_objects_with_ids_and_system(tmp_path):
    path = write(
        tmp_path,
        "p.json",
        json.dumps(
            [
                "plain",
                {"prompt": "with id", "id": 7},
                {"prompt": "own", "custom_id": "x", "system": "S"},
            ]
        ),
    )
    prompts = load_prompt_file(path).prompts
    assert [(p.text, p.custom_id, p.system) for p in prompts] == [
        ("plain", None, None),
        ("with id", "7", None),
        ("own", "x", "S"),
    ]


def test_jsonl_mixes_strings_objects_and_openai_requests(tmp_path):
    lines = [
        json.dumps("a string"),
        json.dumps({"prompt": "an object", "id": "o1"}),
        "",
        json.dumps(
            {
                "custom_id": "r1",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "x",
                    "max_completion_tokens": 9,
                    "temperature": 0.5,
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "and then?"},
                    ],
                },
            }
        ),
    ]
    prompts = load_prompt_file(write(tmp_path, "p.jsonl", "\n".join(lines))).prompts
    assert [p.text for p in prompts] == ["a string", "an object", "and then?"]
    assert prompts[2].custom_id == "r1" and prompts[2].line == 4
    assert prompts[2].options == {"temperature": 0.5, "max_tokens": 9}
    assert [m["role"] for m in prompts[2].messages] == ["user", "assistant", "user"]


def test_csv_prompt_and_id_columns(tmp_path):
    path = write(tmp_path, "p.csv", 'id,Prompt\n1,"Hello, world"\n2,"multi\nline"\n')
    prompts = load_prompt_file(path).prompts
    assert [(p.custom_id, p.text) for p in prompts] == [("1", "Hello, world"), ("2", "multi\nline")]


def test_warnings_for_empty_and_duplicate_prompts(tmp_path):
    path = write(tmp_path, "p.json", json.dumps(["a", "", "b", "a"]))
    loaded = load_prompt_file(path)
    assert [p.text for p in loaded.prompts] == ["a", "b", "a"]
    messages = [str(w) for w in loaded.warnings]
    assert "empty prompt skipped" in messages
    assert "duplicate of an earlier prompt" in messages
    typed = prompts_from_lines(["x", "y", "x"])
    assert [str(w) for w in typed.warnings] == ["line 3: duplicate of line 1"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "Prompts file not found: {path}"),
        (
            "p.xml",
            "<a/>",
            "Unsupported prompts file type '.xml': {path} (supported: .txt, .json, .jsonl, .csv)",
        ),
        ("p.json", '[\n  "ok",\n  oops\n]', "{path}:3:3: invalid JSON: Expecting value"),
        ("p.jsonl", '"ok"\n{"prompt": "x"\n', "{path}:2:15: invalid JSON: Expecting ',' delimiter"),
        (
            "p.txt",
            b"fine\nbad \xff byte\n",
            "{path}:2:5: invalid UTF-8 (byte 0xff); save the file as UTF-8",
        ),
        ("p.txt", "# only a comment\n\n", "No prompts found in {path}"),
        ("p.json", '{"prompt": "x"}', "{path}: expected a JSON array of prompts, got dict"),
        ("p.json", "[1]", '{path}: item 1: expected a string or an object with "prompt"'),
        ("p.csv", "question\nwhy\n", "{path}:1: no 'prompt' column (found: question)"),
        (
            "p.jsonl",
            '{"prompt": "a", "id": 1}\n{"prompt": "b", "id": 1}\n',
            "{path}:2: duplicate id '1' (first on line 1)",
        ),
    ],
)
def test_bad_files_say_what_and_where(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        write(tmp_path, name, content)
    with pytest.raises(PromptFileError) as error:
        load_prompt_file(path)
    assert str(error.value) == message.format(path=path)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.text(min_size=1).filter(lambda s: s.strip() == s and s.strip()), min_size=1, max_size=20
    )
)
def test_jsonl_round_trip_is_identity(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("rt") / "p.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in texts),
        encoding="utf-8",
    )
    assert [p.text for p in load_prompt_file(path).prompts] == texts


def openai_line(body: dict, **fields) -> str:
    return json.dumps(
        {
            "custom_id": "r1",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "hi"}], **body},
            **fields,
        }
    )


def test_openai_options_null_means_not_given_and_wrong_types_name_the_line(tmp_path):
    good = write(
        tmp_path,
        "ok.jsonl",
        openai_line(
            {"temperature": None, "max_tokens": None, "max_completion_tokens": 8, "stop": None}
        ),
    )
    assert load_prompt_file(good).prompts[0].options == {"max_tokens": 8}
    for body, message in (
        ({"max_tokens": "8"}, "Max tokens: expected a whole number, got '8'"),
        ({"temperature": -1}, "Temperature: must be at least 0.0, got -1"),
        ({"top_p": "high"}, "Top-p: expected a number, got 'high'"),
        ({"stop": [1]}, "stop: expected a string or a list of strings"),
    ):
        path = write(tmp_path, "bad.jsonl", "\n" + openai_line(body))
        with pytest.raises(PromptFileError, match=f"bad.jsonl:2: {re.escape(message)}"):
            load_prompt_file(path)


def test_openai_content_as_text_parts_and_checked_url_and_method(tmp_path):
    parts = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    }
    path = write(tmp_path, "parts.jsonl", openai_line(parts))
    assert load_prompt_file(path).prompts[0].text == "a\nb"
    cases = [
        (openai_line({}, url="/v1/embeddings"), "\"url\" '/v1/embeddings' is not supported"),
        (openai_line({}, method="GET"), '"method" must be "POST"'),
        (openai_line({"messages": [{"content": "hi"}]}), 'needs a string "role"'),
        (
            openai_line({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "other parts (images, audio) are not supported",
        ),
    ]
    for line, message in cases:
        with pytest.raises(PromptFileError, match=re.escape(message)):
            load_prompt_file(write(tmp_path, "x.jsonl", line))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000, "deep.json:1: JSON nested too deeply"),
        ("deep.jsonl", '"a"\n' + "[" * 100_000, "deep.jsonl:2: JSON nested too deeply"),
        ("big.jsonl", '{"prompt": "x", "id": ' + "9" * 5000 + "}", "big.jsonl:1: invalid JSON"),
        ("lone.json", '["\\ud800 hi"]', "lone.json: invalid text: a lone surrogate"),
        ("lone.jsonl", '"ok"\n{"prompt": "\\udfff"}', "lone.jsonl:2: invalid text"),
        ("quote.csv", 'prompt\nfine\n"open quote\nmore\n', "quote.csv:3: invalid CSV"),
        ("ids.json", '[{"prompt": "a", "id": [1]}]', "an id must be text or a whole number"),
    ],
)
def test_hostile_files_are_one_line_errors_naming_the_line(tmp_path, name, content, message):
    with pytest.raises(PromptFileError, match=re.escape(message)):
        load_prompt_file(write(tmp_path, name, content))


def test_csv_cells_over_128_kib_and_multiline_records_load_with_their_first_line(tmp_path):
    long = "x" * 200_000
    path = write(tmp_path, "p.csv", f'prompt,{long[:1]}\n"two\nlines",1\nthree,{long}\n')
    prompts = load_prompt_file(path).prompts
    assert [(p.text, p.line) for p in prompts] == [("two\nlines", 2), ("three", 4)]
    header = write(tmp_path, "h.csv", f"{long},prompt\na,b\n")
    assert load_prompt_file(header).prompts[0].text == "b"


def test_cr_only_line_endings_are_lines(tmp_path):
    path = write(tmp_path, "mac.txt", b"one\rtwo\r\rthree")
    assert [(p.text, p.line) for p in load_prompt_file(path).prompts] == [
        ("one", 1),
        ("two", 2),
        ("three", 4),
    ]
    jsonl = write(tmp_path, "mac.jsonl", b'"a"\r"b"\r\n"c\\u2028d"')
    assert [p.text for p in load_prompt_file(jsonl).prompts] == ["a", "b", "c\u2028d"]


@settings(max_examples=200, deadline=None)
@given(
    suffix=st.sampled_from([".txt", ".json", ".jsonl", ".csv"]),
    data=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
            lambda inner: st.one_of(
                st.lists(inner, max_size=4),
                st.dictionaries(
                    st.sampled_from(
                        [
                            "prompt",
                            "id",
                            "custom_id",
                            "system",
                            "body",
                            "messages",
                            "role",
                            "content",
                            "max_tokens",
                            "temperature",
                            "stop",
                            "url",
                            "method",
                            "type",
                            "text",
                        ]
                    ),
                    inner,
                    max_size=5,
                ),
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    ),
)
def test_fuzzed_files_raise_only_prompt_file_errors_naming_the_file(tmp_path_factory, suffix, data):
    path = tmp_path_factory.mktemp("fuzz") / f"f{suffix}"
    path.write_bytes(data)
    try:
        loaded = load_prompt_file(path)
    except PromptFileError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    for prompt in loaded.prompts:
        prompt.text.encode("utf-8")  # every loaded prompt is storable text
