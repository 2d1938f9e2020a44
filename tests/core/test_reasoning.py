"""The thought split from the answer where it arrives inline, the reasoning settings'
checks, and a thought with no answer never counted as one (through the real engine and
checkpoint)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_batch.core.backend import CallableBackend
from tui_batch.core.cache.key import KeyMaker
from tui_batch.core.errors import SettingsError
from tui_batch.core.jobs import GenerationSettings, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT, from_parts, split_inline
from tui_batch.core.run_spec import RunSpec


@pytest.mark.parametrize(
    ("content", "reasoning", "answer", "closed"),
    [
        ("<think>\nhmm\n</think>\n\nBlue.", "hmm", "Blue.", True),
        ("  <think>hmm</think></think> Blue.", "hmm", "Blue.", True),  # a stray close
        ("[THINK]hmm[/THINK]Blue.", "hmm", "Blue.", True),
        ("<seed:think>hmm</seed:think>Blue.", "hmm", "Blue.", True),
        # The prompt opened the block: only the close tag comes (QwQ, R1 distills).
        ("hmm, blue it is\n</think>\n\nBlue.", "hmm, blue it is", "Blue.", True),
        ("<think>I will consider", "I will consider", "", False),  # cut off inside
        ("<think></think>\n\nBlue.", "", "Blue.", True),  # thinking off: an empty block
        ("Blue. No tags <b>here</b>.", None, "Blue. No tags <b>here</b>.", True),
        ("I think <think> is a tag.", None, "I think <think> is a tag.", True),
    ],
)
def test_inline_thoughts_are_split_from_the_answer(content, reasoning, answer, closed):
    thought = split_inline(content)
    assert (thought.reasoning, thought.answer, thought.closed) == (reasoning, answer, closed)


def test_a_prompt_that_opened_the_block_makes_untagged_text_a_thought():
    thought = split_inline("still thinking about", opened=True)
    assert thought.reasoning == "still thinking about" and not thought.closed


def test_a_thought_sent_apart_wins_and_a_stray_close_is_dropped():
    thought = from_parts("</think>\n\nBlue.", "hmm")
    assert (thought.reasoning, thought.answer) == ("hmm", "Blue.")
    assert from_parts("Blue.", "").reasoning is None


@given(st.text(max_size=40).filter(lambda t: "</" not in t and "[/" not in t), st.text(max_size=40))
def test_a_closed_thought_never_leaks_into_the_answer(thought, answer):
    split = split_inline(f"<think>{thought}</think>{answer}")
    assert split.reasoning == thought.strip() and split.closed
    assert split.answer == answer.lstrip() or answer.lstrip().startswith("</")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"reasoning": "maybe"}, "Reasoning (--reasoning): expected one of auto | on | off"),
        ({"reasoning_effort": "max"}, "expected one of low | medium | high"),
        ({"reasoning_budget": "300"}, "leaves no room for the answer in Max tokens"),
        ({"reasoning_budget": "-1"}, "Reasoning budget: must be at least 0"),
        ({"reasoning": "off", "reasoning_budget": "10"}, "reasoning is off"),
    ],
)
def test_wrong_reasoning_settings_are_one_line(tmp_path, values, message):
    with pytest.raises(SettingsError) as caught:
        RunSpec.from_values({"prompts": tmp_path / "p.txt", **values})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_settings_are_stored_and_read_back_with_the_job(tmp_path):
    spec = RunSpec.from_values(
        {"prompts": tmp_path / "p.txt", "reasoning": "ON", "reasoning_budget": "32"}
    )
    assert spec.generation.reasoning == "on" and spec.generation.reasoning_budget == 32
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a"], settings=spec.generation)
    again, _ = processor.load_job(job.job_id)
    assert again.settings.reasoning == "on" and again.settings.reasoning_budget == 32


def test_the_cache_keys_answers_by_reasoning_setting():
    prompt = Prompt("a")
    keys = {
        KeyMaker("m", GenerationSettings(**chosen)).key("rendered", prompt)
        for chosen in (
            {},
            {"reasoning": "off"},
            {"reasoning": "on"},
            {"reasoning_budget": 8},
            {"reasoning_effort": "low"},
        )
    }
    assert len(keys) == 5


def test_a_thought_with_no_answer_fails_and_its_thought_is_kept(tmp_path):
    answers = {
        "cut": "<think>let me see, first",
        "empty": "<think>done thinking</think>  ",
        "fine": "<think>easy</think>Yes.",
    }
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", list(answers))
    processor.process_batch(job, CallableBackend(answers.__getitem__))
    _, results = processor.load_job(job.job_id)
    cut, empty, fine = results
    assert cut.error_message == INCOMPLETE_THOUGHT and cut.reasoning == "let me see, first"
    assert empty.error_message == INCOMPLETE_THOUGHT and empty.thought_cut
    assert fine.success and (fine.response_text, fine.reasoning) == ("Yes.", "easy")
    assert job.failed == 2


def test_a_templates_front_matter_sets_reasoning_unless_the_job_does(tmp_path):
    from tui_batch.core.errors import TemplateError
    from tui_batch.core.run_input import load_run_input

    data = tmp_path / "d.csv"
    data.write_text("q\nWhat is 2+2?\n")
    text = '+++\nreasoning = "on"\nreasoning_budget = 64\n+++\n{{ q }}'
    spec = RunSpec.from_values({"template_text": text, "data": data})
    settled = load_run_input(spec).settled(spec)
    assert (settled.generation.reasoning, settled.generation.reasoning_budget) == ("on", 64)
    spec = RunSpec.from_values({"template_text": text, "data": data, "reasoning": "off"})
    with pytest.raises(SettingsError, match="reasoning is off"):  # the job's own wins
        load_run_input(spec).settled(spec)
    wrong = RunSpec.from_values({"template_text": '+++\nreasoning = "yes"\n+++\nx', "data": data})
    with pytest.raises(TemplateError, match=r"line 2: Reasoning \(--reasoning\): expected one of"):
        load_run_input(wrong)


def test_compare_diffs_answers_not_thoughts(tmp_path):
    from tui_batch.core.compare import Comparison

    processor = BatchProcessor(tmp_path)
    jobs = []
    said = {"2+2?": "4", "sky?": "Blue."}
    for thoughts in (("add them", "it is blue"), ("two and two", "the sky, so blue")):
        answers = dict(zip(["2+2?", "sky?"], thoughts, strict=True))
        job = processor.create_job("m", list(answers))
        processor.process_batch(
            job, CallableBackend(lambda p, a=answers: f"<think>{a[p]}</think>{said[p]}")
        )
        jobs.append(job)
    with Comparison([job.checkpoint_file for job in jobs]) as comparison:
        assert comparison.summary().states == {"identical": 2}
