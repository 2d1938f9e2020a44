"""Job files: what is written reads back the same, and mistakes name the key and line."""

from __future__ import annotations

import os

import pytest
import tomllib
from hypothesis import given
from hypothesis import strategies as st

from tui_batch.core.errors import JobFileError
from tui_batch.core.jobfile import job_file_text, load_job_file, save_job_file, toml_value
from tui_batch.core.setting_table import SETTINGS

from support.job_values import BATCH, LOCAL, SERVERS

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)


@given(TEXT)
def test_any_text_is_written_as_toml_that_reads_back_the_same(text):
    assert tomllib.loads(f"v = {toml_value(text)}")["v"] == text
    assert tomllib.loads(f"v = {toml_value([text, text])}")["v"] == [text, text]


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1))
def test_numbers_read_back_the_same(number, whole):
    assert tomllib.loads(f"v = {toml_value(number)}")["v"] == number
    assert tomllib.loads(f"v = {toml_value(whole)}")["v"] == whole


# A job file's reader checks each key alone: the two kinds of run may meet in one file.
EVERY_KEY = {**LOCAL, **SERVERS, **BATCH, "prompts": None, "template": "t.jinja"}


def test_every_key_of_the_schema_round_trips(tmp_path):
    assert {setting.name for setting in SETTINGS} == set(EVERY_KEY)
    values = {k: v for k, v in EVERY_KEY.items() if v is not None}
    paths = {setting.name for setting in SETTINGS if setting.kind == "path"}
    given = {k: (tmp_path / v if k in paths else v) for k, v in values.items()}
    path = save_job_file(tmp_path / "job.toml", given)
    text = path.read_text()
    assert 'template = "t.jinja"' in text and "[server]" in text
    assert load_job_file(path) == given
    assert "api_key" not in text.replace("api_key_env", "")  # a key's name, never a key


def test_numbers_typed_as_text_are_checked_and_written_as_numbers(tmp_path):
    text = job_file_text({"max_tokens": "12", "temperature": "0.5", "n_threads": ""}, tmp_path)
    assert tomllib.loads(text) == {"generation": {"max_tokens": 12, "temperature": 0.5}}


def test_paths_are_relative_to_the_job_file(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "job.toml").write_text('[input]\ndata = "../d.csv"\n')
    assert load_job_file(tmp_path / "jobs" / "job.toml") == {"data": tmp_path / "d.csv"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[run]\n\n  retries = true\n", "job.toml, line 3: run.retries: Retries: expected a"),
        ("[generation]\nstop = [1]\n", "line 2: generation.stop: expected: expected a string"),
        ('[model]\nbatch_invariant = "yes"\n', "model.batch_invariant: expected true or false"),
        ('[server]\napi_key_env = "sk-abc 123"\n', "line 2: server.api_key_env:"),
        ('[input]\ndata = ""\n', "line 2: input.data: the path is empty"),
        ("version = 2\n", "job.toml, line 1: unknown key 'version'"),
        ("[input]\n[input.x]\n", "line 1: input.x: unknown key"),
        (b"\xff\xfe", "job.toml: not UTF-8 text"),
    ],
)
def test_mistakes_name_the_key_and_the_line(tmp_path, content, expected):
    path = tmp_path / "job.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(JobFileError) as caught:
        load_job_file(path)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_job_file_must_be_toml_and_writable(tmp_path):
    with pytest.raises(JobFileError, match="ends in .toml"):
        save_job_file(tmp_path / "job.json", {})
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(JobFileError, match="Cannot write job file"):
            save_job_file(tmp_path / "ro" / "job.toml", {})
