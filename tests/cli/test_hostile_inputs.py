"""Hostile or mistaken inputs: templates that would never end or fill the memory, TOML
nested too deeply, files that never end (a FIFO, /dev/zero), and outputs that would
replace an input or land outside the job file's folder. Each is one line and exit 2,
quickly, with nothing lost."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from tui_batch.cli.main import _looks_like_prompts_file
from tui_batch.core.errors import SettingsError, TemplateError
from tui_batch.core.jobs import BatchResult, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.templates import limits as render_limits
from tui_batch.core.templates.render import render_prompts
from tui_batch.core.templates.template import PromptTemplate, validate

from conftest import EXAMPLES, run_cli
from support.fake_server import FakeServer


def records(tmp_path: Path, count: int = 3) -> Path:
    data = tmp_path / "d.jsonl"
    rows = [{"review": f"review {n}", "n": n} for n in range(count)]
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return data


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("{{ review * 10**10 }}", "too big to render: repeating a value"),
        ("{{ 'x' * 9999999999 }}", "too big to render"),
        ('{{ "a"|center(9999999999) }}', "an argument of 9,999,999,999 is too big"),
        ("{{ review.ljust(10**10) }}", "too big to render"),
        ('{{ "%9999999999d" % 1 }}', "a format asks for a width or precision too big"),
        ('{{ "{:>9999999999}".format(1) }}', "a format asks for a width or precision too big"),
        ("{{ 7 ** 99999999 }}", "is a number of"),
        ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(1) }}", "recursion too deep"),
    ],
)
def test_templates_that_would_build_huge_values_fail_their_records_at_once(
    tmp_path, template, said
):
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        render_prompts(PromptTemplate(template, "t.jinja"), records(tmp_path))
    message = str(caught.value)
    assert message.startswith("3 of 3 records of") and "t.jinja, record 1: " in message
    assert said in message
    assert time.monotonic() - started < 5


def test_a_template_that_never_ends_is_stopped_once_and_named(tmp_path, monkeypatch):
    monkeypatch.setattr(render_limits, "RENDER_SECONDS", 0.5)
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"t.jinja, record 1: rendering took over"):
        validate(PromptTemplate(endless, "t.jinja"), [(1, {}), (2, {}), (3, {})])
    assert time.monotonic() - started < 3  # stopped at the first record, not at each
    # The watchdog takes nothing from the renders after it.
    ok = PromptTemplate("{{ n }}", "t.jinja")
    time.sleep(1)
    assert [ok.render({"n": n}) for n in range(3)] == ["0", "1", "2"]


def test_ordinary_filters_formats_and_loops_still_render():
    template = PromptTemplate(
        "{{ review|upper|center(20) }}|{{ '%5d' % n }}|{{ '{:>4}'.format(n) }}|"
        "{{ '100%% of 123456789' % () }}|{% for i in range(3) %}{{ i }}{% endfor %}|"
        "{{ review|replace('kettle', 'pot') }}|{{ 2 ** 10 }}|{{ 'ab' * 2 }}"
    )
    assert template.render({"review": "nice kettle", "n": 7}) == (
        "    NICE KETTLE     |    7|   7|100% of 123456789|012|nice pot|1024|abab"
    )


def test_a_long_record_is_not_a_long_render(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"review": "x" * (render_limits.MAX_RENDERED + 10)}) + "\n")
    with pytest.raises(TemplateError, match="the prompt is over"):
        render_prompts(PromptTemplate("{{ review }}"), data)


def test_the_cli_says_which_records_cannot_be_rendered_without_a_traceback(tmp_path):
    data = records(tmp_path)
    macro = "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(1) }}"
    done = run_cli("run", "--template-text", macro, "--data", str(data))
    assert done.returncode == 2
    assert "3 of 3 records" in done.stderr and "recursion too deep" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("where", ["job file", "front matter"])
def test_toml_nested_too_deeply_is_one_line(tmp_path, where):
    deep = "x = " + "[" * 100_000 + "]" * 100_000
    inline = "x = " + "{a = " * 2_000 + "1" + "}" * 2_000
    for body in (deep, inline):
        if where == "job file":
            path = tmp_path / "job.toml"
            path.write_text(f"[run]\n{body}\n")
            done = run_cli("run", str(path))
        else:
            path = tmp_path / "t.jinja"
            path.write_text(f"+++\n{body}\n+++\nHi {{{{ review }}}}\n")
            done = run_cli("run", "--template", str(path), "--data", str(records(tmp_path)))
        assert done.returncode == 2, done.stderr
        assert "nested too deeply" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_inputs_that_never_end_are_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    job = tmp_path / "z.toml"
    job.symlink_to("/dev/zero")
    data = str(EXAMPLES / "reviews.csv")
    template = str(EXAMPLES / "review_headline.jinja")
    for args, what in [
        (["run", str(fifo)], "Prompts file"),
        (["run", "--template", template, "--data", str(fifo)], "Data file"),
        (["run", "--template", "/dev/zero", "--data", data], "Template file"),
        (["run", str(job)], "Job file"),
    ]:
        done = run_cli(*args, timeout=30)
        assert done.returncode == 2, done.stderr
        assert f"{what} is not a regular file (a pipe or a device?)" in done.stderr


def test_no_output_replaces_an_input_or_leaves_the_job_files_folder(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "reviews.csv").write_text("id,review\n1,nice\n")
    (folder / "prompt.toml").write_text("Headline: {{ review }}\n")
    job = folder / "job.toml"
    base = '[input]\ntemplate = "prompt.toml"\ndata = "reviews.csv"\n'
    bashrc = tmp_path / ".bashrc"
    bashrc.write_text("# mine\n")
    for output, said in [
        ("job.toml", "is a file this run reads"),
        ("reviews.csv", "is a file this run reads"),
        ("prompt.toml", "is a file this run reads"),
        ("../.bashrc", "outside the job file's folder and the data dir; to write there"),
    ]:
        job.write_text(base + f'[output]\nfile = "{output}"\n')
        before = {p.name: p.read_text() for p in (*folder.iterdir(), bashrc)}
        done = run_cli("run", str(job), "--max-tokens", "1")
        assert done.returncode == 2 and said in done.stderr, done.stderr
        assert {p.name: p.read_text() for p in (*folder.iterdir(), bashrc)} == before
    # Saving a job file over the template it names would destroy the template.
    saved = run_cli("run", str(job), "--save-job", str(folder / "prompt.toml"), "--out", "x.csv")
    assert saved.returncode == 2 and "is a file this run reads" in saved.stderr
    assert (folder / "prompt.toml").read_text() == "Headline: {{ review }}\n"


# A short form in the README's own style, a hint per field: over 255 characters, longer
# than a file name may be, so it must never be asked for as a path.
LONG_SHORT_FORM = ", ".join(
    f"field{n}: str # what the {n}th part of the answer says, in a few words" for n in range(6)
)


def test_a_long_short_form_is_a_schema_not_a_file_name(tmp_path):
    assert len(LONG_SHORT_FORM) > 255
    (tmp_path / "p.txt").write_text("hello\n")
    job = tmp_path / "job.toml"
    job.write_text(f'[input]\nprompts = "p.txt"\n[generation]\nschema = "{LONG_SHORT_FORM}"\n')
    reply = json.dumps({f"field{n}": "x" for n in range(6)})
    with FakeServer() as fake:
        fake.reply = reply
        for args in (
            ["run", str(tmp_path / "p.txt"), "--schema", LONG_SHORT_FORM],
            ["run", str(job)],
        ):
            done = run_cli(*args, "--server", fake.url)
            assert done.returncode == 0, done.stderr
            assert "Completed: 1 succeeded" in done.stderr
    # The dashboard's door: a job file is still taken for a file, the short form not.
    assert _looks_like_prompts_file(str(job)) and not _looks_like_prompts_file(LONG_SHORT_FORM)


def test_numbers_past_any_sane_size_are_one_line(tmp_path):
    for args, said in [
        (["cache", "prune", "--max-size", "9" * 400], "--max-size: "),
        (["cache", "prune", "--older-than", "9" * 400 + "d"], "--older-than: "),
        (["run", str(tmp_path / "p.txt"), "--schema", "x: float 1e999.."], "too large"),
        (["run", str(tmp_path / "p.txt"), "--schema", "x: float ..-1e999"], "too large"),
        (["run", str(tmp_path / "p.txt"), "--schema", "x: int 1.." + "9" * 30], "too large"),
        (["run", str(tmp_path / "p.txt"), "--choices", "a,b\udcff"], "not UTF-8"),
        (["run", str(tmp_path / "p.txt"), "--schema", "x: str # hint \udcff"], "not UTF-8"),
    ]:
        (tmp_path / "p.txt").write_text("hi\n")
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert said in line and "Traceback" not in done.stderr, line
    assert BatchProcessor().job_summaries() == []


def test_repeats_are_checked_before_the_prompts_are_repeated():
    with pytest.raises(SettingsError, match="Repeats: must be at most 100"):
        BatchProcessor().create_job("m", ["a", "b"], repeats=10**9)


def test_a_checkpoint_whose_records_are_not_objects_is_one_line(tmp_path):
    processor = BatchProcessor()
    job = processor.create_job("m", [Prompt("a", variables={"want": "x"})])
    job.completed = 1
    processor.save_checkpoint(job, [BatchResult(0, "a", "x", True)])
    path = processor.store.path_for(job.job_id)
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(
            "UPDATE prompts SET data = json_set(data, '$.variables', json('[1, 2]'))"
        )
        connection.commit()
    scored = run_cli("score", job.job_id, "--expect", "want")
    assert scored.returncode == 2 and "variables are not an object" in scored.stderr
    (tmp_path / "t.txt").write_text("{{ response }}\n")
    data = run_cli("run", "--template", str(tmp_path / "t.txt"), "--data", f"job:{job.job_id}")
    assert data.returncode == 2 and "variables are not an object" in data.stderr
    for done in (scored, data):
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
