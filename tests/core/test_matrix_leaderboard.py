"""Matrices crossed into groups, and the leaderboard's statistics: McNemar's exact test,
the pairing of each variant with the best, and ranking without expected answers."""

from __future__ import annotations

import pytest

from tui_batch.core.backend import CallableBackend
from tui_batch.core.errors import JobFileError, SettingsError
from tui_batch.core.jobfile import load_job_matrix, save_job_file
from tui_batch.core.leaderboard import BY_MAJORITY, BY_SCORE, leaderboard, mcnemar_exact
from tui_batch.core.matrix import MAX_VARIANTS, cross, matrix_from_flags
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompt_stream import first_chunk, open_stream
from tui_batch.core.run_spec import RunSpec

from support.mcnemar import exact_p


@pytest.mark.parametrize("b, c", [(0, 0), (0, 2), (1, 9), (3, 3), (10, 40), (480, 620)])
def test_mcnemar_exact_against_exact_fractions(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(exact_p(b, c), rel=1e-9, abs=1e-300)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_the_cross_product_names_each_variant_and_has_a_bound():
    matrix = matrix_from_flags(["temperature=0,0.7", "system=Be brief.,Be kind."])
    variants = cross(matrix)
    assert [v.label for v in variants] == [
        "temperature=0 system_prompt=Be brief.",
        "temperature=0 system_prompt=Be kind.",
        "temperature=0.7 system_prompt=Be brief.",
        "temperature=0.7 system_prompt=Be kind.",
    ]
    assert variants[3].values == {"temperature": "0.7", "system_prompt": "Be kind."}
    with pytest.raises(SettingsError, match=f"at most {MAX_VARIANTS}"):
        cross({"seed": list(range(9)), "temperature": list(range(9))})


@pytest.mark.parametrize(
    "flag, said",
    [
        ("temperature", "give KEY=VALUE"),
        ("temperature=0,", "no empty value"),
        ("prompts=a.txt,b.txt", "cannot vary in a matrix"),
        ("warmth=1,2", "unknown setting 'warmth'"),
    ],
)
def test_a_wrong_matrix_flag_says_what(flag, said):
    with pytest.raises(SettingsError, match=said):
        matrix_from_flags([flag])


def test_a_job_files_matrix_is_checked_where_it_is_and_saved_back(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(
        '[input]\nprompts = "p.txt"\n\n[matrix]\ntemperature = [0.0, 0.7]\n'
        'server = ["http://127.0.0.1:1/v1", ["http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1"]]\n'
    )
    matrix = load_job_matrix(path)
    assert matrix["temperature"] == [0.0, 0.7]
    assert matrix["server"][1] == ["http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1"]
    saved = save_job_file(tmp_path / "again.toml", {"prompts": tmp_path / "p.txt"}, matrix)
    assert load_job_matrix(saved) == matrix
    path.write_text('[input]\nprompts = "p.txt"\n\n[matrix]\ntemperature = [0.0, -1.0]\n')
    with pytest.raises(JobFileError, match=r"job.toml, line 5: matrix.temperature"):
        load_job_matrix(path)
    path.write_text("[matrix]\ntemperature = 0.5\n")
    with pytest.raises(JobFileError, match="line 2: matrix.temperature: expected a list"):
        load_job_matrix(path)


def run_variant(tmp_path, answer, scored: bool):
    """A job over the same 40 records, answered by `answer(record number)`."""
    data = tmp_path / "d.csv"
    if not data.exists():
        data.write_text("n,expected\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    values = {"template_text": "{{ n }}", "data": data}
    if scored:
        values |= {"expect": "expected", "score": "exact"}
    spec = RunSpec.from_values(values)
    stream = open_stream(spec, spec.input_slice)
    processor = BatchProcessor()
    job = processor.create_streamed_job("m", stream, first_chunk(stream), spec)
    backend = CallableBackend(lambda prompt: answer(int(prompt)))
    processor.run_streamed(job, backend, stream=stream)
    return processor.open_job(job.job_id)


def test_the_leaderboard_pairs_each_variant_with_the_best(tmp_path):
    right = lambda n: str(n % 2)  # noqa: E731
    # b: right but for the first 4; c: wrong on 10 more, right on 1 of b's misses.
    b = run_variant(tmp_path, lambda n: "x" if n < 4 else right(n), True)
    c = run_variant(tmp_path, lambda n: "x" if 3 <= n < 15 else right(n), True)
    a = run_variant(tmp_path, right, True)
    board = leaderboard("g1", [c, b, a])
    assert board.by == BY_SCORE
    assert [v.job_id for v in board.variants] == [a.job_id, b.job_id, c.job_id]
    best, second, third = board.variants
    assert (best.right, best.judged, best.p_value) == (40, 40, None)
    assert (second.right, second.improvements, second.regressions) == (36, 0, 4)
    assert second.p_value == pytest.approx(exact_p(0, 4))
    assert (third.right, third.regressions) == (28, 12)
    assert third.p_value == pytest.approx(exact_p(0, 12)) and third.distinguishable
    assert not second.distinguishable  # 4 against 0 is p = 0.125


def test_without_expected_answers_it_ranks_by_agreement_with_the_majority(tmp_path):
    same = lambda n: f"answer {n}"  # noqa: E731
    a = run_variant(tmp_path, same, False)
    b = run_variant(tmp_path, same, False)
    odd = run_variant(tmp_path, lambda n: "other" if n < 10 else same(n), False)
    board = leaderboard("g2", [odd, a, b])
    assert board.by == BY_MAJORITY
    assert board.variants[-1].job_id == odd.job_id
    assert (board.variants[-1].right, board.variants[-1].judged) == (30, 40)
    assert board.variants[-1].regressions == 10
