"""Job setup and a job file with a matrix: the group is named and how to run it said,
and saving the form keeps the matrix."""

from __future__ import annotations

from tui_batch.core.jobfile import load_job_matrix
from tui_batch.ui.app import TuiBatchApp

from support.ui import SIZE, ready, settle, wait_until


async def test_a_job_file_with_a_matrix_opens_with_its_group_said_and_saves_it_back(tmp_path):
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    path = tmp_path / "job.toml"
    path.write_text(
        '[input]\nprompts = "p.txt"\n\n[matrix]\ntemperature = [0.0, 0.7]\nseed = [1, 2, 3]\n'
    )
    seen: list = []
    app = TuiBatchApp(path)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await ready(pilot)

        def said() -> list[str]:
            return [m.notification.message for m in seen if hasattr(m, "notification")]

        await wait_until(pilot, lambda: any("[matrix]" in text for text in said()))
        text = next(text for text in said() if "[matrix]" in text)
        assert "a group of 6 jobs" in text and f"tui-batch run {path}" in text
        app.screen._save_job(tmp_path / "again.toml")
        await settle(pilot)
    assert load_job_matrix(tmp_path / "again.toml") == {
        "temperature": [0.0, 0.7],
        "seed": [1, 2, 3],
    }
