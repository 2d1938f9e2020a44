"""The dashboard on inputs of more than one chunk: a job starts from the first chunk of
its file and reads the rest while it runs, as `tui-batch run` does; a job stopped while
it read its input reads on when resumed from the dashboard."""

from __future__ import annotations

import json

import pytest

from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompt_stream import CHUNK, first_chunk, open_stream
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.stored import StoredResults, result_counts
from tui_batch.ui import messages
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.progress import ProgressScreen, reading_label, status_line
from tui_batch.ui.widgets.template_editor import TemplateEditor

from support.ui import SIZE, previewed, ready, settle, slow_backend, type_into, wait_until

COUNT = 2 * CHUNK + 500


def many_prompts(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("".join(f"prompt number {i}\n" for i in range(COUNT)))
    return path


def answers_match(job_id: str) -> None:
    """Every prompt has its one answer (the instant backend's: the prompt upper-cased)."""
    job = BatchProcessor().open_job(job_id)
    assert job.reading is None and job.total_prompts == COUNT
    results = StoredResults(job.checkpoint_file, job.prompts)
    assert len(results) == COUNT
    assert all(r.response_text == f"PROMPT NUMBER {r.prompt_index}" for r in results)


@pytest.mark.parametrize("kind", ["prompts file", "template"])
async def test_a_job_of_several_chunks_starts_from_its_first_from_setup(tmp_path, kind):
    seen: list = []
    # A fifth of a millisecond an answer: the input is read in over a second or two,
    # long enough for the screen to be seen saying so on a busy machine (an instant
    # backend once read all of it between two looks).
    backend = slow_backend(0.0002)
    if kind == "prompts file":
        app = TuiBatchApp(many_prompts(tmp_path), backend_factory=backend)
    else:
        data = tmp_path / "many.csv"
        data.write_text("n\n" + "".join(f"{i}\n" for i in range(COUNT)))
        app = TuiBatchApp(backend_factory=backend)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await ready(pilot)
        if kind == "prompts file":
            assert await previewed(pilot) == COUNT  # counted in chunks, the first shown
        else:
            await pilot.press("f2")
            await pilot.pause()
            app.screen.query_one(TemplateEditor).load_text("prompt number {{ n }}")
            await type_into(pilot, "#data-path", str(data))
            template = app.screen.query_one("#template-preview")
            await wait_until(
                pilot, lambda: f"{COUNT:,} records, all render" in str(template.visual)
            )
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
        run = app.run_state
        lines: list[str] = []
        reading: list[str] = []

        def watched() -> bool:
            lines.append(status_line(run).plain)
            reading.append(reading_label(run).plain)
            return run.finished

        await wait_until(pilot, watched)
        await settle(pilot)
        said = [m.notification for m in seen if hasattr(m, "notification")]
        started = [n.message for n in said if n.title == "Started"]
        # Made from the first chunk: the rest was read in while it ran.
        assert started and f"{CHUNK:,} prompts so far" in started[0]
        finished = [m for m in seen if isinstance(m, messages.JobFinished)]
    assert finished and finished[0].status is JobStatus.COMPLETED
    assert finished[0].completed == COUNT and finished[0].failed == 0
    answers_match(finished[0].job_id)
    written = json.loads(finished[0].results_file.read_text())
    assert len(written["results"]) == COUNT
    # Said while the input was read in (5,000 records, then 10,000), then no more.
    assert any("records so far, the rest as it runs" in line for line in reading)
    assert reading[-1] == ""
    assert lines[-1].lstrip().startswith(f"100.0%  {COUNT}/{COUNT} done")


async def test_a_job_stopped_while_reading_its_input_reads_on_when_resumed(tmp_path):
    path = many_prompts(tmp_path)
    processor = BatchProcessor()
    spec = RunSpec.from_values({"prompts": path})
    stream = open_stream(spec, spec.input_slice)
    job = processor.create_streamed_job("m", stream, first_chunk(stream), spec)
    assert job.total_prompts == CHUNK and job.reading is not None  # as if killed here
    app = TuiBatchApp(processor=processor, backend_factory=slow_backend(0.0))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.resume_job(job.job_id)
        await wait_until(pilot, lambda: app.run_state is not None and app.run_state.finished)
        await settle(pilot)
        assert app.run_state.job.total_prompts == COUNT
    answers_match(job.job_id)
    assert result_counts(job.checkpoint_file).succeeded == COUNT
