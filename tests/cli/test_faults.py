"""What attacking the program found: stop signals, crashes at bad moments, full and
read-only disks, damaged checkpoints, outputs that would destroy data."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tui_batch.core.errors import CheckpointError, ExportError
from tui_batch.core.jobs import BatchResult, JobStatus, validate_job_id
from tui_batch.core.processor import BatchProcessor

from conftest import EXAMPLES, run_cli
from support.checkpoints import made_before_checks
from support.cli import FAST, read_until_done, start_cli
from support.fake_server import FakeServer


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("tui-batch: error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def prompts_file(tmp_path: Path, count: int = 6) -> Path:
    path = tmp_path / "p.txt"
    path.write_text("".join(f"Say the number {i}.\n" for i in range(count)))
    return path


# Stop signals -----------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_run_like_ctrl_c(tmp_path, signum, code):
    process = start_cli(
        "run", str(EXAMPLES / "batch_prompts.txt"), *FAST, "--checkpoint-every", "10"
    )
    job_id, lines = read_until_done(process, 3)
    process.send_signal(signum)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == code
    assert f"Resume with: tui-batch resume {job_id}" in rest and "Traceback" not in rest
    job, saved = BatchProcessor().load_job(job_id)
    assert job.status is JobStatus.CANCELLED and len(saved) >= 3  # nothing finished is lost
    resumed = run_cli("resume", job_id, "--threads", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"({25 - len(saved)} to run;" in resumed.stderr


# Crashes at bad moments -----------------------------------------------------------------


def test_kill_9_while_creating_a_job_leaves_no_job_or_a_whole_one(tmp_path, data_dir):
    big = tmp_path / "big.txt"
    big.write_text("".join(f"prompt {i} " + "x" * 200 + "\n" for i in range(200_000)))
    code = (
        "from tui_batch.core.processor import BatchProcessor\n"
        "from tui_batch.core.prompts import load_prompt_file\n"
        f"prompts = load_prompt_file({str(big)!r}).prompts\n"
        "print('loaded', flush=True)\n"
        "BatchProcessor().create_job('m', prompts, job_id='big')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert process.stdout.readline().strip() == "loaded"
    time.sleep(0.3)  # inside create_job: writing 200,000 prompt rows
    process.kill()
    process.wait()
    processor = BatchProcessor()
    scan = processor.scan_checkpoints()
    listed = scan.readable
    assert scan.unreadable == []
    assert listed == [] or listed[0].total_prompts == 200_000
    # The next job made there clears the killed one's scratch file.
    processor.create_job("m", ["a"])
    leftovers = [p.name for p in processor.checkpoint_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_resume_finishes_a_job_killed_between_its_last_checkpoint_and_the_end(tmp_path, data_dir):
    processor = BatchProcessor()
    job = processor.create_job(
        "gone-model",
        ["a", "b"],
        model_path=str(tmp_path / "no-such-model.gguf"),
        output_file=str(tmp_path / "out.json"),
        output_format="json",
    )
    job.status = JobStatus.RUNNING
    processor.save_checkpoint(
        job, [BatchResult(i, p, response_text=p.upper()) for i, p in enumerate(["a", "b"])]
    )
    # No prompt is left: the model (which no longer exists) is never loaded.
    done = run_cli("resume", job.job_id)
    assert done.returncode == 0, done.stderr
    assert BatchProcessor().load_job(job.job_id)[0].status is JobStatus.COMPLETED
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [r["response_text"] for r in results] == ["A", "B"]
    again = run_cli("resume", job.job_id)
    assert again.returncode == 0 and "already finished" in again.stderr


def test_a_second_resume_is_refused_before_any_model_loads(tmp_path, data_dir):
    processor = BatchProcessor()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # loading it would fail: it must not be tried
    job = processor.create_job("m", ["a"], model_path=str(broken))
    with processor.store.lock(job.job_id):
        done = run_cli("resume", job.job_id)
    assert one_line_error(done).endswith(f"Job {job.job_id} is already running in another process")


# Full and read-only disks ---------------------------------------------------------------


@contextlib.contextmanager
def mounted(kind: str, target: Path, options: str, source: str = "none"):
    """A real mount for the test (a tiny tmpfs, a read-only bind); skip where not allowed."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", kind, "-o", options, source, str(target)]
        if kind != "bind"
        else ["mount", "--bind", source, str(target)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.decode().strip()}")
    try:
        if kind == "bind":
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of `folder` until about `leave` bytes are free."""
    filler = folder / "filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        out.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_at_job_creation_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    with mounted("tmpfs", tmp_path / "disk", "size=512k") as disk:
        monkeypatch.setenv("TUI_BATCH_DATA_DIR", str(disk / "data"))
        (disk / "data" / "checkpoints").mkdir(parents=True)
        prompts = tmp_path / "p.txt"
        prompts.write_text("".join(f"prompt {i} {'x' * 100}\n" for i in range(3000)))
        fill(disk, leave=64 * 1024)
        done = run_cli("run", str(prompts), "--threads", "1")
        line = one_line_error(done)
        assert "Cannot create checkpoint" in line and "full" in line
        assert list((disk / "data" / "checkpoints").iterdir()) == []


@pytest.mark.model
def test_a_disk_that_fills_mid_run_stops_with_one_line_and_resumes(tmp_path, monkeypatch):
    with mounted("tmpfs", tmp_path / "disk", "size=2m") as disk:
        monkeypatch.setenv("TUI_BATCH_DATA_DIR", str(disk / "data"))
        processor = BatchProcessor()
        processor.store.check_writable()
        filler = fill(disk, leave=120 * 1024)
        done = run_cli("run", str(EXAMPLES / "batch_prompts.txt"), *FAST, "--checkpoint-every", "1")
        line = one_line_error(done, code=1)
        assert "Cannot save checkpoint" in line and "full" in line
        assert "the last checkpoint is intact" in line
        (summary,) = processor.job_summaries()
        assert 0 < summary.done < 25
        filler.unlink()
        resumed = run_cli("resume", summary.job_id, "--threads", "1")
        assert resumed.returncode == 0, resumed.stderr
        job, results = processor.load_job(summary.job_id)
        assert job.status is JobStatus.COMPLETED
        assert [r.prompt_index for r in results] == list(range(25))


def test_a_read_only_data_dir_lists_and_exports_but_refuses_to_run(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("TUI_BATCH_DATA_DIR", str(data))
    job = BatchProcessor().create_job("m", ["a", "b"])
    BatchProcessor().save_checkpoint(job, [BatchResult(0, "a", response_text="A")])
    with mounted("bind", data, "", source=str(data)):
        listing = run_cli("checkpoints")
        assert listing.returncode == 0 and job.job_id in listing.stdout, listing.stderr
        out = tmp_path / "out.json"
        exported = run_cli("export", job.job_id, "--out", str(out))
        assert exported.returncode == 0, exported.stderr
        assert json.loads(out.read_text())["summary"]["completed"] == 1
        # Refused before any model loads: this "model" does not even exist.
        run = run_cli("run", str(prompts_file(tmp_path)), "--model", "/nowhere.gguf")
        line = one_line_error(run)
        assert "Cannot write checkpoints in" in line and "Read-only file system" in line
        resume = run_cli("resume", job.job_id)
        assert "Read-only file system" in one_line_error(resume)


# Damaged checkpoints --------------------------------------------------------------------


def damage(path: Path, sql: str, *params) -> None:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(sql, params)
        connection.commit()


def header_with(path: Path, **changes) -> str:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        header = json.loads(connection.execute("SELECT header FROM job").fetchone()[0])
    for key, value in changes.items():
        if value is KeyError:
            del header[key]
        else:
            header[key] = value
    return json.dumps(header)


DAMAGES = {
    "not-object": lambda p: damage(p, "UPDATE job SET header = ?", "[1, 2]"),
    "no-model": lambda p: damage(p, "UPDATE job SET header = ?", header_with(p, model_id=KeyError)),
    "number-date": lambda p: damage(p, "UPDATE job SET header = ?", header_with(p, updated_at=5)),
    "bad-status": lambda p: damage(p, "UPDATE job SET header = ?", header_with(p, status="odd")),
    "bad-settings": lambda p: damage(p, "UPDATE job SET header = ?", header_with(p, settings=3)),
    "bad-setting": lambda p: damage(
        p, "UPDATE job SET header = ?", header_with(p, settings={"max_tokens": "many"})
    ),
    "no-prompt": lambda p: damage(p, "DELETE FROM prompts WHERE idx = 0"),
    "bad-prompt": lambda p: damage(
        made_before_checks(p), "UPDATE prompts SET data = '{\"text\": 5}'"
    ),
    "deep-header": lambda p: damage(p, "UPDATE job SET header = ?", "[" * 100_000),
    "bad-result": lambda p: damage(
        made_before_checks(p), "UPDATE results SET tokens_output = 'lots'"
    ),
}


def test_damaged_checkpoints_are_flagged_rows_and_one_line_errors(tmp_path, data_dir):
    processor = BatchProcessor()
    good = processor.create_job("m", ["ok"], job_id="good")
    for name, make_damage in DAMAGES.items():
        job = processor.create_job("m", ["a", "b"], job_id=name)
        processor.save_checkpoint(job, [BatchResult(1, "b", response_text="B")])
        make_damage(Path(job.checkpoint_file))
    listing = run_cli("checkpoints", "--json")
    assert listing.returncode == 0, listing.stderr
    document = json.loads(listing.stdout)
    body_only = {"no-prompt", "bad-prompt", "bad-result"}  # a listing reads headers alone
    listed = {c["job_id"] for c in document["checkpoints"]}
    assert listed == {good.job_id} | body_only
    flagged = {Path(u["path"]).name for u in document["unreadable"]}
    assert flagged == {f"batch_{name}.db" for name in set(DAMAGES) - body_only}
    assert all(u["reason"] for u in document["unreadable"])
    for name in DAMAGES:
        for command in (["export", name, "--out", str(tmp_path / "x.json")], ["resume", name]):
            line = one_line_error(run_cli(*command))
            assert "Unreadable checkpoint" in line, (name, line)


def test_export_during_a_run_is_one_snapshot(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", [f"p{i}" for i in range(2000)])
    stop = threading.Event()

    def write() -> None:
        with processor.store.writer(job) as writer:
            for i in range(2000):
                job.completed = i + 1
                writer.commit(job, [BatchResult(i, f"p{i}", response_text="r")])
                if stop.is_set():
                    return

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(30):
            loaded, results = processor.load_checkpoint(job.checkpoint_file)
            assert loaded.completed == len(results)
    finally:
        stop.set()
        writer.join()


# Outputs that would destroy data ----------------------------------------------------------


def test_out_may_not_be_the_prompts_a_checkpoint_or_a_device(tmp_path, data_dir):
    prompts = prompts_file(tmp_path)
    before = prompts.read_text()
    line = one_line_error(run_cli("run", str(prompts), "--out", str(prompts)))
    assert "is a file this run reads" in line and prompts.read_text() == before
    job = BatchProcessor().create_job("m", ["a"])
    checkpoint = Path(job.checkpoint_file)
    for target in (checkpoint, tmp_path / "copy.db"):
        if target != checkpoint:
            target.write_bytes(checkpoint.read_bytes())
        line = one_line_error(
            run_cli("export", job.job_id, "--out", str(target), "--format", "json")
        )
        assert "is inside" in line or "is a database" in line
    assert BatchProcessor().load_job(job.job_id)[0].job_id == job.job_id
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in ("/dev/null", str(fifo), str(tmp_path)):
        line = one_line_error(run_cli("export", job.job_id, "--out", target))
        assert "not a regular file" in line or "is a folder" in line
    assert Path("/dev/null").is_char_device()


def test_a_killed_exports_scratch_file_is_cleared_by_the_next_export(tmp_path):
    processor = BatchProcessor(tmp_path / "cp")
    job = processor.create_job("m", ["a"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    litter = tmp_path / f".out.json.tui-batch-{dead.pid}-abcd1234.tmp"
    litter.write_text("half")
    live = tmp_path / f".out.json.tui-batch-{os.getpid()}-abcd1234.tmp"
    live.write_text("mine, still being written")
    processor.export_results(job, [], tmp_path / "out.json")
    assert not litter.exists() and live.exists()


def test_job_ids_with_a_trailing_newline_are_refused():
    for bad in ("abc\n", "abc\r\n", "\nabc"):
        with pytest.raises(CheckpointError, match="Invalid job id"):
            validate_job_id(bad)


def test_exporting_to_a_folder_is_an_error(tmp_path):
    processor = BatchProcessor(tmp_path / "cp")
    job = processor.create_job("m", ["a"])
    with pytest.raises(ExportError, match="is a folder"):
        processor.export_results(job, [], tmp_path)


def test_a_killed_job_reads_interrupted_and_a_live_one_running(tmp_path):
    """The job's lock tells them apart: a live process holds it (running, not resumable
    from elsewhere); a `kill -9` leaves a record that says running and no process."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"question {n}\n" for n in range(40)))
    with FakeServer(delay=0.2) as fake:
        process = start_cli(
            "run", str(prompts), "--server", f"{fake.url}#1", "--checkpoint-every", "1"
        )
        try:
            job_id, _ = read_until_done(process, 2)
            (live,) = json.loads(run_cli("checkpoints", "--json").stdout)["checkpoints"]
            assert (live["status"], live["state"], live["resumable"]) == (
                "running",
                "running",
                False,
            )
            assert "tui-batch resume" not in run_cli("checkpoints").stdout
        finally:
            process.kill()
            process.wait()
    (killed,) = json.loads(run_cli("checkpoints", "--json").stdout)["checkpoints"]
    assert (killed["state"], killed["resumable"]) == ("interrupted", True)
    table = run_cli("checkpoints").stdout
    assert "interrupted" in table and f"tui-batch resume {job_id}" in table


def test_with_every_server_gone_the_line_says_so_and_the_job_stops_resumable(tmp_path):
    """The server goes away mid-job: the progress line says for how long and when the
    next try is; past --give-up-after the job stops, resumable, with the reason and the
    command; the server back, resume finishes it."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"question {n}\n" for n in range(12)))
    server = FakeServer(delay=0.1)
    server.__enter__()
    url, port = server.url, server.port
    process = start_cli(
        "run", str(prompts), "--server", f"{url}#1", "--checkpoint-every", "1",
        "--give-up-after", "3", "--retries", "50",
    )  # fmt: skip
    try:
        job_id, lines = read_until_done(process, 3)
        server.__exit__(None, None, None)  # refused from now on
        _, rest = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, rest
    said = "".join(lines) + rest
    assert "is out:" in said
    assert "waiting: every server is unreachable for" in said and "next try in" in said
    (last,) = [line for line in said.splitlines() if line.startswith("Stopped:")]
    assert "every server has been unreachable for" in last and "--give-up-after 3" in last
    assert f"tui-batch resume {job_id}" in last
    (summary,) = BatchProcessor().job_summaries()
    assert summary.status is JobStatus.CANCELLED and summary.resumable
    with FakeServer(port=port):
        resumed = run_cli("resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    job, results = BatchProcessor().load_job(job_id)
    assert job.status is JobStatus.COMPLETED and len(results) == 12
