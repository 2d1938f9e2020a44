"""One typed spec for a run: every setting of the table reaches it and comes back, a job
file written from it reads back as the same spec, and text or typed values make the same
one."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_batch.core.errors import SettingsError
from tui_batch.core.jobfile import load_job_file, save_job_file
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.run_spec import LOCAL_KEYS, RunSpec
from tui_batch.core.servers import SERVER_KEYS
from tui_batch.core.setting_table import SETTINGS
from tui_batch.ui.last_setup import LastSetup, load_last_setup, save_last_setup, setup_path

from support.job_values import BATCH, LOCAL, SERVERS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def with_paths(values: dict, folder: Path) -> dict:
    paths = {s.name for s in SETTINGS if s.kind == "path"}
    return {k: (folder / v if k in paths else v) for k, v in values.items()}


@pytest.mark.parametrize("values", [LOCAL, SERVERS, BATCH], ids=["local", "servers", "batch"])
def test_every_setting_reaches_the_spec_and_comes_back(tmp_path, values):
    values = with_paths(values, tmp_path)
    spec = RunSpec.from_values(values)
    assert spec.to_values() == values
    path = save_job_file(tmp_path / "job.toml", spec.to_values())
    assert load_job_file(path) == values
    assert RunSpec.from_values(load_job_file(path)) == spec


def test_the_two_cover_every_setting_of_the_table():
    given = set(LOCAL) | set(SERVERS) | set(BATCH)
    assert {s.name for s in SETTINGS} - {"prompts", "template"} <= given


def test_text_as_typed_and_typed_values_make_the_same_spec():
    typed = RunSpec.from_values({"max_tokens": 12, "temperature": 0.5, "batch_invariant": True})
    text = RunSpec.from_values({"max_tokens": "12", "temperature": "0.5", "batch_invariant": "on"})
    assert typed == text
    assert typed.generation.max_tokens == 12 and text.generation.temperature == 0.5


def test_a_job_file_holds_what_was_given_and_what_differs_from_the_defaults():
    spec = RunSpec.from_values({"prompts": "p.txt", "temperature": "0", "max_tokens": 256})
    assert spec.to_values() == {"prompts": Path("p.txt"), "temperature": 0.0, "max_tokens": 256}
    # Blank text is "not given": the default, or automatic.
    assert RunSpec.from_values({"seed": "", "n_threads": " "}).to_values() == {}
    # On servers a job retries by default; said or not, it comes back the same.
    remote = RunSpec.from_values({"server": "http://127.0.0.1:9/v1"})
    assert remote.options.retries == 5 and "retries" not in remote.to_values()
    assert RunSpec.from_values(remote.to_values()) == remote


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rpm": "60"}, "Requests/min (--rpm) applies to servers only"),
        ({"server": ["http://a:1/v1"], "n_ctx": 512}, "Context size (--n-ctx) applies to local"),
        ({"max_tokens": "0"}, "Max tokens: must be at least 1, got 0"),
        ({"format": "xml"}, "Results format (--format): expected one of json, csv, jsonl"),
        ({"price_in": "1"}, "Prices: give both"),
        ({"threshold": 3}, "Unknown setting 'threshold'"),
        ({"max_token": 3}, "Unknown setting 'max_token'"),
        ({"data": ""}, "Data file (--data): the path is empty"),
        ({"server": []}, "Server: at least one endpoint URL is required"),
    ],
)
def test_mistakes_name_the_setting_as_both_faces_show_it(values, message):
    with pytest.raises(SettingsError) as caught:
        RunSpec.from_values(values)
    assert message in str(caught.value)


NUMBERS = {
    s.name: s
    for s in SETTINGS
    if s.is_number and s.name not in ("price_in", "price_out", *SERVER_KEYS)
}


def number(setting):
    low = setting.minimum if setting.minimum is not None else 0
    high = setting.maximum if setting.maximum is not None else low + 10**6
    if setting.kind == "int":
        return st.integers(int(low), int(high))
    return (
        st.floats(low, high, allow_nan=False)
        .map(lambda x: round(x, 3))
        .filter(lambda x: low <= x <= high)
    )


local_values = st.fixed_dictionaries(
    {},
    optional={
        **{name: number(setting) for name, setting in NUMBERS.items()},
        "stop": st.lists(st.text(min_size=1, max_size=5), max_size=3),
        "system_prompt": st.text(min_size=1, max_size=20).filter(lambda t: t.strip() == t),
        "batch_invariant": st.booleans(),
        "error_strategy": st.sampled_from(["continue", "stop", "threshold:2"]),
        "model": st.sampled_from(["m", "some/model.gguf"]),
        "format": st.sampled_from(["json", "csv", "jsonl"]),
        "expect": st.sampled_from(["label", "expected answer"]),
        "score": st.sampled_from(["exact", "number", "json-field a.b", "fields"]),
        "reasoning": st.sampled_from(["auto", "on", "off"]),
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
    },
).filter(  # a thought's budget leaves room for the answer, and needs a thought
    lambda v: (
        "reasoning_budget" not in v
        or (v["reasoning_budget"] < v.get("max_tokens", 256) and v.get("reasoning") != "off")
    )
)


@settings(max_examples=60, deadline=None)
@given(local_values, st.booleans())
def test_any_spec_written_to_a_job_file_reads_back_the_same(tmp_path_factory, values, remote):
    folder = tmp_path_factory.mktemp("job")
    values = {**values, "prompts": folder / "p.txt"}
    if "score" in values or "tolerance" in values:
        values.setdefault("expect", "label")  # no score without the expected column
    if "max_cost" in values:  # no cost without what tokens cost
        values.update(price_in=values.get("price_in", 1.0), price_out=values.get("price_out", 2.0))
    if remote:
        values = {k: v for k, v in values.items() if k not in LOCAL_KEYS}
        values.update(server=["http://127.0.0.1:8000/v1#2"], rpm=60, stream=False)
    spec = RunSpec.from_values(values)
    path = save_job_file(folder / "job.toml", spec.to_values())
    again = RunSpec.from_values(load_job_file(path))
    assert again == spec and again.given == spec.given


def test_a_job_is_made_from_a_spec(tmp_path):
    spec = RunSpec.from_values(
        {
            "max_tokens": "9",
            "retries": "2",
            "out": tmp_path / "r.csv",
            "price_in": "1",
            "price_out": "2",
            "error_strategy": "threshold:4",
        }  # fmt: skip
    )
    job = BatchProcessor().create_job("m", ["a"], spec=spec)
    assert job.settings.max_tokens == 9 and job.retries == 2 and job.error_strategy == "threshold:4"
    assert job.output_file == str(tmp_path / "r.csv") and job.output_format == "csv"
    assert (job.prices.input, job.prices.output) == (1.0, 2.0)
    # The guide's call, and fields given alone, still make a job.
    plain = BatchProcessor().create_job("m", ["a"], retries=1)
    assert plain.retries == 1 and plain.settings.max_tokens == 256


def test_job_files_written_before_still_load():
    spec = RunSpec.from_values(load_job_file(EXAMPLES / "job.toml"))
    assert spec.template == EXAMPLES / "review_headline.jinja" and spec.id_field == "id"
    assert spec.generation.n_threads == 1 and spec.options.checkpoint_every == 20
    assert spec.output == EXAMPLES / "output" / "review_headlines.csv"


def test_the_remembered_setup_is_a_job_plus_the_screens_keys(tmp_path):
    spec = RunSpec.from_values({"prompts": tmp_path / "p.txt", "max_tokens": "7"})
    save_last_setup(LastSetup(spec.to_values(), {"tab": "prompts", "run_on": "local"}))
    setup = load_last_setup()
    assert RunSpec.from_values(setup.job) == spec
    assert setup.screen == {"tab": "prompts", "run_on": "local"}


def test_a_setup_remembered_field_by_field_still_loads(tmp_path):
    old = {
        "max_tokens": "77", "temperature": "0.2", "seed": "", "threshold": "4",
        "retries": "1", "checkpoint_every": "5", "price_in": "", "price_out": "",
        "n_ctx": "512", "threads": "1", "n_gpu_layers": "0", "parallel": "",
        "batch_invariant": True, "model": "/models/m.gguf", "run_on": "local",
        "server": {"servers": "http://127.0.0.1:8000/v1", "concurrency": "16",
                   "rpm": "", "tpm": "", "api_key_env": "OPENAI_API_KEY", "server_model": ""},
        "system": "Be brief.", "strategy": "threshold", "prompts_path": None,
        "input": "template",
        "template": {"template_text": "{{ a }}", "data": "/d.csv", "id_field": None},
    }  # fmt: skip
    setup_path().parent.mkdir(parents=True, exist_ok=True)
    setup_path().write_text(__import__("json").dumps(old))
    setup = load_last_setup()
    spec = RunSpec.from_values(setup.job)
    assert spec.generation.max_tokens == 77 and spec.generation.n_threads == 1
    assert spec.generation.batch_invariant and spec.generation.system_prompt == "Be brief."
    assert spec.options.error_strategy == "threshold:4" and spec.template_text == "{{ a }}"
    assert spec.model == "/models/m.gguf" and spec.server is None
    assert setup.screen["tab"] == "template" and setup.screen["run_on"] == "local"
    assert setup.screen["server"]["servers"] == "http://127.0.0.1:8000/v1"
