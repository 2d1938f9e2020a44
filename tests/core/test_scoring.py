"""Scores: each method against expected answers (hypothesis for `number` and `fields`),
the confusion matrix against one counted by hand, accuracy's interval, re-scoring a job
without running it, regressions between jobs, the results' wrong filter, a job's answers
as the next job's records, and repeats laid out with a seed each."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_batch.core.compare import Comparison
from tui_batch.core.errors import DataFileError, SettingsError
from tui_batch.core.jobs import BatchJob, BatchResult, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.results import ResultsView
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.scoring.figures import Confusion, wilson
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.stats import job_stats
from tui_batch.core.structured.schema import parse_choices, parse_schema
from tui_batch.core.templates.records import iter_records

REVIEW = parse_schema("sentiment: positive|negative|neutral, stars: int 1..5")


def score(method: str, expected, text: str, output=None, schema=None, tolerance=0.0) -> float:
    scoring = Scoring.from_text("expected", method, tolerance)
    assert scoring.problem(expected) is None
    return scoring.score(expected, text, output, schema)


@pytest.mark.parametrize(
    ("method", "expected", "answer", "right"),
    [
        ("exact", "Paris", "  paris ", True),
        ("exact", "New  York", "new york", True),
        ("exact", "Paris", "Paris, France", False),
        ("exact", 42, "42", True),
        ("contains", "Paris", "It is PARIS, of course.", True),
        ("contains", "Lyon", "It is Paris.", False),
        ("regex", r"^\d{3}-\d{4}$", "555-1234", True),
        ("regex", r"(?i)yes\b", "Yes, it is", True),
        ("regex", r"^\d+$", "12a", False),
        ("number", "1,234.5", "The total is 1234.5 dollars.", True),
        ("number", 3, "2 + 1 = 3", True),
        ("number", 3, "3 apples and 4 pears", False),  # the last number counts
        ("number", "-0.5", "-.5", True),
    ],
)
def test_each_text_method(method, expected, answer, right):
    assert score(method, expected, answer) == float(right)


def test_json_field_and_fields_read_the_answer_or_its_json():
    answer = {"sentiment": "negative", "stars": 2, "tags": ["a", "b"], "meta": {"x": 1}}
    text = json.dumps(answer)
    assert score("json-field sentiment", "Negative", text, answer, REVIEW) == 1.0
    assert score("json-field stars", "2", text) == 1.0  # free text: its JSON is read
    assert score("json-field meta.x", 1, "Sure! " + text + " Hope it helps") == 1.0
    assert score("json-field stars", 3, text, tolerance=1) == 1.0
    assert score("json-field tags", '["a", "b"]', text) == 1.0
    assert score("json-field missing", "x", text) == 0.0
    expected = {"sentiment": "negative", "stars": 3, "tags": ["a", "b"], "meta": {"x": 1}}
    assert score("fields", json.dumps(expected), text, answer) == 0.75
    assert score("fields", expected, "no json here") == 0.0
    choice = parse_choices("yes,no")
    assert score("exact", "YES", '"yes"', "yes", choice) == 1.0  # a choice is its label


@given(
    st.floats(-1e9, 1e9, allow_nan=False),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.floats(0, 100, allow_nan=False),
)
def test_a_number_is_right_within_the_tolerance_and_wrong_past_it(expected, off, tolerance):
    answer = expected + off
    # The method allows a relative 1e-9 for float rounding: within it of the edge,
    # rounding decides (62500000.0625 is 62500000.0 give or take 1e-9 of it).
    slack = 1e-9 * max(1.0, abs(expected))
    if math.isclose(abs(off), tolerance, rel_tol=1e-6, abs_tol=1e-6 + 2 * slack):
        return
    text = f"The answer is {answer!r}."
    assert score("number", repr(expected), text, tolerance=tolerance) == float(
        abs(off) <= tolerance
    )


@given(
    st.dictionaries(
        st.text("abcdef", min_size=1, max_size=4),
        st.one_of(st.integers(-99, 99), st.text("xyz ", max_size=5), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    st.data(),
)
def test_fields_scores_the_share_of_expected_fields_the_answer_has_alike(expected, data):
    changed = data.draw(st.sets(st.sampled_from(sorted(expected)), max_size=len(expected)))
    answer = {
        key: (f"not {value!r}" if key in changed else value) for key, value in expected.items()
    }
    answer["extra"] = 1  # fields not expected do not count
    got = score("fields", json.dumps(expected), json.dumps(answer), answer)
    assert got == pytest.approx((len(expected) - len(changed)) / len(expected))


def test_mistakes_in_scoring_are_one_line():
    with pytest.raises(SettingsError, match="unknown method 'exakt'"):
        Scoring.from_text("label", "exakt")
    with pytest.raises(SettingsError, match="json-field needs the field"):
        Scoring.from_text("label", "json-field")
    with pytest.raises(SettingsError, match="Tolerance .*: expected a number"):
        Scoring.from_text("label", "number", "lots")
    with pytest.raises(SettingsError, match="Score .--score. needs Expect .--expect."):
        RunSpec.from_values({"score": "exact"})
    assert "not a regular expression" in Scoring("x", "regex").problem("(")
    assert Scoring("x", "number").problem("ten") == "'ten' is not a number"


def test_a_record_without_an_expected_value_is_unscored_and_an_error_too():
    scoring = Scoring("label")
    assert scoring.judge({"label": ""}, True, False, "x", None, None) == (None, None)
    assert scoring.judge({}, True, False, "x", None, None) == (None, None)
    assert scoring.judge({"label": "x"}, False, False, "", None, None) == (None, "x")
    assert scoring.judge({"label": "x"}, False, True, "y", None, None) == (0.0, "x")
    assert scoring.judge({"label": "x"}, True, False, " X ", None, None) == (1.0, "x")


def test_wilson_interval_stays_inside_0_1_and_matches_known_values():
    low, high = wilson(41, 50)
    assert (round(low, 4), round(high, 4)) == (0.6920, 0.9023)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(0, 0) is None


def _scored_job(tmp_path, answers, expected, schema=None, method="exact", job_id=None):
    """A job whose results are `answers` (None: an error) against `expected`."""
    processor = BatchProcessor(tmp_path / "ck")
    prompts = [
        Prompt(f"p{i}", custom_id=f"r{i}", variables={"label": e}) for i, e in enumerate(expected)
    ]
    spec = RunSpec.from_values({"expect": "label", "score": method, "invalid_retries": "0"})
    if schema is not None:
        spec = spec.with_schema(schema)
    job = processor.create_job("m", prompts, spec=spec, job_id=job_id)
    answer_of = iter(answers)

    def answer(text: str) -> str:
        value = next(answer_of)
        if value is None:
            raise RuntimeError("boom")
        return value

    processor.process_batch(job, answer)
    return processor, job


def test_the_confusion_matrix_and_per_label_figures_match_a_hand_count(tmp_path):
    labels = parse_choices("pos,neg,neu")
    expected = ["pos", "pos", "pos", "neg", "neg", "neu", "neu", "Neg", "pos", ""]
    answers = ["pos", "neg", "pos", "neg", "pos", "neu", "maybe", "neg", None, "pos"]
    _, job = _scored_job(tmp_path, answers, expected, labels)
    stats = job_stats(job.checkpoint_file)
    # Scored: 8 (the error and the blank expected are not); right: pos,pos,neg,neu,Neg.
    assert (stats.scored, stats.right) == (8, 5)
    [confusion] = stats.confusions
    # By hand: rows expected, columns answered; "maybe" broke the choices: (other).
    assert confusion.labels == ["pos", "neg", "neu"]
    assert confusion.columns == ["pos", "neg", "neu", Confusion.OTHER]
    hand = {
        ("pos", "pos"): 2, ("pos", "neg"): 1,
        ("neg", "neg"): 2, ("neg", "pos"): 1,
        ("neu", "neu"): 1, ("neu", Confusion.OTHER): 1,
    }  # fmt: skip
    for e in confusion.labels:
        for a in confusion.columns:
            assert confusion.count(e, a) == hand.get((e, a), 0), (e, a)
    figures = {f.label: f for f in confusion.per_label()}
    assert figures["pos"].precision == pytest.approx(2 / 3)
    assert figures["pos"].recall == pytest.approx(2 / 3)
    assert figures["neg"].precision == pytest.approx(2 / 3)
    assert figures["neu"].recall == pytest.approx(1 / 2)
    assert figures["neu"].f1 == pytest.approx(2 / 3)
    data = stats.to_dict()
    assert data["accuracy"] == pytest.approx(5 / 8)
    assert data["confusions"][0]["matrix"][0] == [2, 1, 0, 0]
    # The results of one cell, as the stats screen opens them.
    with ResultsView(job.checkpoint_file) as view:
        assert list(view.select(cell=confusion.cell("neg", "pos"))) == [4]
        assert list(view.select(cell=confusion.cell("neu", Confusion.OTHER))) == [6]
        assert list(view.select("wrong")) == [1, 4, 6]


def test_a_job_is_scored_again_without_running_and_regressions_are_found(tmp_path):
    expected = ["4", "9", "16", "25", "36"]
    processor, first = _scored_job(tmp_path, ["4", "9", "16", "x", "36"], expected, job_id="a")
    _, second = _scored_job(tmp_path, ["4", "8", "16", "25", "37"], expected, job_id="b")
    with Comparison([first.checkpoint_file, second.checkpoint_file]) as comparison:
        summary = comparison.summary()
        assert (summary.regressions, summary.improvements) == (2, 1)
        rows = comparison.rows(changed=True)
        assert [(r.key, r.regression) for r in rows] == [
            ("r1", True), ("r4", True), ("r3", False)
        ]  # fmt: skip
        assert comparison.count(changed=True) == 3
    # Scored again as numbers within 1 of the expected: 37 is right now.
    done = processor.score_job("b", Scoring.from_text("label", "number", "1"))
    assert (done.scored, done.right) == (5, 5)
    _, results = processor.load_job("b")
    assert [r.score for r in results] == [1.0] * 5
    assert processor.job_summary("b").scoring == Scoring("label", "number", None, 1.0)
    with pytest.raises(SettingsError, match="record 4: 'x' is not a number"):
        _scored_job(tmp_path, ["1"] * 5, ["1", "2", "3", "x", "5"], method="number")


def test_a_jobs_answers_are_the_next_jobs_records(tmp_path, monkeypatch):
    monkeypatch.setenv("TUI_BATCH_DATA_DIR", str(tmp_path / "data"))
    processor = BatchProcessor()
    prompts = [Prompt(f"review {i}", custom_id=f"r{i}", variables={"product": "kettle"})
               for i in range(3)]  # fmt: skip
    spec = RunSpec.from_values({"invalid_retries": "0"}).with_schema(REVIEW)
    job = processor.create_job("m", prompts, spec=spec)
    replies = iter(
        [
            '{"sentiment": "positive", "stars": 5}',
            "not json",
            '{"sentiment": "negative", "stars": 1}',
        ]
    )
    processor.process_batch(job, lambda _: next(replies))
    records = list(iter_records(f"job:{job.job_id}"))
    assert [number for number, _ in records] == [1, 3]  # the invalid answer is no record
    number, first = records[0]
    assert first["product"] == "kettle" and first["sentiment"] == "positive"
    assert (first["id"], first["prompt"], first["stars"]) == ("r0", "review 0", 5)
    assert first["output"] == {"sentiment": "positive", "stars": 5}
    with pytest.raises(DataFileError, match="no job 'nothere'"):
        list(iter_records("job:nothere"))


def test_repeats_lay_each_prompt_out_with_a_seed_each(tmp_path):
    processor = BatchProcessor(tmp_path)
    spec = RunSpec.from_values({"repeats": "3", "temperature": "0.8", "seed": "10"})
    job = processor.create_job("m", ["a", Prompt("b", options={"seed": 100})], spec=spec)
    assert [(p.text, p.repeat, p.options["seed"]) for p in job.prompts] == [
        ("a", 0, 10), ("a", 1, 11), ("a", 2, 12), ("b", 0, 100), ("b", 1, 101), ("b", 2, 102)
    ]  # fmt: skip
    loaded, _ = processor.load_job(job.job_id)
    assert loaded.repeats == 3 and [p.repeat for p in loaded.prompts] == [0, 1, 2] * 2
    with pytest.raises(SettingsError, match="at temperature 0 every run gives the same"):
        processor.create_job("m", ["a"], spec=RunSpec.from_values({"repeats": "2"}))


def test_repeats_agreement_and_the_majority_vote(tmp_path):
    processor = BatchProcessor(tmp_path)
    spec = RunSpec.from_values(
        {"repeats": "3", "temperature": "0.8", "expect": "label", "score": "exact"}
    )
    prompts = [Prompt(f"q{i}", variables={"label": e}) for i, e in enumerate(["a", "b"])]
    job = processor.create_job("m", prompts, spec=spec)
    answers = iter(["a", "A", "c", "c", "c", "b"])
    processor.process_batch(job, lambda _: next(answers))
    figures = job_stats(job.checkpoint_file).repeats
    assert figures is not None and figures.repeats == 3
    assert [(p.first, p.agreement, p.majority) for p in figures.prompts] == [
        (0, pytest.approx(2 / 3), "a"),
        (3, pytest.approx(2 / 3), "c"),
    ]
    assert (figures.majority_scored, figures.majority_right) == (2, 1)
    assert figures.levels == {2: 2}
    assert isinstance(BatchJob.from_header(job.header(), job.prompts).repeats, int)


def test_a_result_scored_right_or_wrong_round_trips(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a"])
    processor.save_checkpoint(job, [BatchResult(0, "a", "b", score=0.5, expected={"x": [1]})])
    _, [result] = processor.load_job(job.job_id)
    assert (result.score, result.expected, result.right) == (0.5, {"x": [1]}, False)


def test_a_job_not_finished_is_no_data_for_another():
    processor = BatchProcessor()
    job = processor.create_job("m", ["a", "b", "c"])
    job.completed = 1
    processor.save_checkpoint(job, [BatchResult(0, "a", "yes", True)])
    with pytest.raises(DataFileError, match=r"1 of 3 prompts answered; it is pending: finish it"):
        list(iter_records(f"job:{job.job_id}"))
    running = pytest.raises(DataFileError, match="it is running: wait until it finishes")
    with processor.store.lock(job.job_id), running:  # a live process runs it
        list(iter_records(f"job:{job.job_id}"))
