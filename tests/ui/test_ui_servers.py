"""The dashboard on servers, driven by keys: set up, test the connection, run, watch the
servers' state, read each result's attempts."""

from __future__ import annotations

import socket

from rich.text import Text

from tui_batch.core.processor import BatchProcessor
from tui_batch.core.servers import ServerSettings, parse_endpoint
from tui_batch.core.stats import job_stats
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.modals import result_details
from tui_batch.ui.screens.progress import ProgressScreen, servers_text
from tui_batch.ui.screens.setup import SetupScreen

from support.fake_server import FakeServer
from support.ui import SIZE, prompts_file, ready, settle, type_into, wait_until


def rendered(widget) -> str:
    content = widget.render()
    return content.plain if isinstance(content, Text) else str(content)


async def choose_servers(pilot, setup: SetupScreen) -> None:
    setup.query_one("#run-on").focus()
    await pilot.press("enter", "down", "enter")
    await pilot.pause()
    assert setup.on_servers
    assert not setup.query_one("#local-section").display
    assert setup.query_one("#server-section").display
    for field in ("#servers", "#server-model", "#api-key-env", "#concurrency", "#rpm"):
        assert setup.query_one(field).region.width > 10, field  # shown, not just present


async def test_a_job_on_a_server_from_setup_by_keys(tmp_path):
    with FakeServer(delay=0.3) as fake:
        fake.script.extend(["429:1"])
        app = TuiBatchApp(prompts_file(tmp_path, count=8, long_one=False))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            setup = app.screen
            assert isinstance(setup, SetupScreen)
            await choose_servers(pilot, setup)
            assert setup.query_one("#retries").value == "5"  # servers retry by default
            await type_into(pilot, "#servers", f"{fake.url}#2")
            await pilot.press("f5")
            await wait_until(pilot, lambda: setup.query_one("#server-model").value == "fake-model")
            assert "ok " in rendered(setup.query_one("#server-check"))
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
            progress = app.screen
            await wait_until(pilot, lambda: progress.query_one("#server-panel").display)
            panel = rendered(progress.query_one("#server-panel"))
            assert "in flight" in panel and fake.url in panel
            # Given to the backend is not sent: all but two wait for the server's slots.
            states = [progress._row(i)[1].plain for i in range(8)]
            assert states.count("running") <= 2 and "waiting" in states
            await wait_until(pilot, lambda: app.run_state.finished, timeout=60)
            job_id = app.run_state.job.job_id
            # The panel repaints on its own timer: wait for the repaint after the end (the
            # requests sent are tallied as the last results are recorded, a tick later
            # maybe than the last in flight left).
            server_panel = progress.query_one("#server-panel")
            await wait_until(
                pilot,
                lambda: (
                    "0/16 in flight" in rendered(server_panel)
                    and "9 sent" in rendered(server_panel)
                ),
            )
            panel = rendered(server_panel)
            assert "0/16 in flight" in panel and "9 sent" in panel  # one 429, 8 answers
            # One count of requests and errors, the same in the stats as on this screen.
            figures = job_stats(BatchProcessor().store.path_for(job_id))
            counted = {e.endpoint: [e.requests, e.request_errors] for e in figures.endpoints}
            assert counted == app.run_state.requests == {fake.url: [9, 1]}
            assert "9 sent  1 errors" in panel
        assert fake.peak <= 2
    job, results = BatchProcessor().load_job(job_id)
    assert job.completed == 8 and job.server is not None
    assert [e.url for e in job.server.endpoints] == [fake.url]
    retried = [r for r in results if r.attempts == 2]
    assert len(retried) == 1 and retried[0].attempt_log[0].status == 429
    details = result_details(retried[0]).plain
    assert "Attempts" in details and "429" in details and "retry-after 1s" in details
    assert f"Server {fake.url}" in details


async def test_test_connection_and_start_say_what_is_wrong(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    app = TuiBatchApp(prompts_file(tmp_path, long_one=False))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        setup = app.screen
        await choose_servers(pilot, setup)
        await type_into(pilot, "#servers", "localhost:8000")
        await pilot.press("f5")
        await pilot.pause()
        assert "http://" in rendered(setup.query_one("#server-check"))
        await type_into(pilot, "#servers", dead)
        await pilot.press("f5")
        await wait_until(
            pilot, lambda: "Cannot reach" in rendered(setup.query_one("#server-check"))
        )
        await type_into(pilot, "#server-model-name", "some-model")
        await pilot.press("ctrl+r")
        await wait_until(
            pilot, lambda: "Cannot reach" in rendered(setup.query_one("#server-check"))
        )
        await settle(pilot)
        assert isinstance(app.screen, SetupScreen)  # nothing started
    assert not list(BatchProcessor().checkpoint_dir.glob("batch_*.db"))


def test_the_servers_panel_names_states_and_limits():
    from tui_batch.backends.remote.admission import Admission, Outcome

    server = ServerSettings(
        (parse_endpoint("http://a:1/v1#4"), parse_endpoint("http://b:2/v1")),
        concurrency=8,
        rpm=600,
    )
    admission = Admission(server)
    a, b = admission.endpoints
    a.in_flight, admission.in_flight = 1, 1
    admission.release(a, Outcome.THROTTLED, retry_after=30, error="HTTP 429")
    b.in_flight, admission.in_flight = 1, 1
    admission.release(b, Outcome.DOWN, error="connection refused")
    text = servers_text(admission.status()).plain
    assert "0/8 in flight" in text and "rpm ≤ 600" in text
    assert "cooling http://a:1/v1 for 30s" in text and "0/2 in flight (cap 4)" in text
    assert "out http://b:2/v1 (probe in 1s)" in text and "connection refused" in text


async def test_a_served_model_name_is_shown_as_data(tmp_path):
    with FakeServer(model="[bold red]m[/]") as fake:
        app = TuiBatchApp(prompts_file(tmp_path, long_one=False))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            setup = app.screen
            await choose_servers(pilot, setup)
            await type_into(pilot, "#servers", fake.url)
            await pilot.press("f5")
            select = setup.query_one("#server-model")
            await wait_until(pilot, lambda: select.value == "[bold red]m[/]")
            await settle(pilot)
            assert "[bold red]m[/]" in rendered(select.query_one("SelectCurrent Static"))
