"""A job through a provider's Batch API (`/v1/files` + `/v1/batches`): half the price,
answers within the provider's window, crash-exact like every other job.

The engine submits prompts as to any backend; they wait here until a file's worth is
gathered (or the engine has no more to give), then each file goes through the states
`core.batch_records` keeps in the job's checkpoint, each committed before the step that
needs it: its lines recorded, uploaded, `creating`, created (`create_once` looks for a
batch already made on the file before it makes one), polled with backoff, and, once
the batch has ended, its output and error files read line by line in any order, each
answer matched by its `custom_id` and handed to the engine, which checks and stores it
as a live one. A line that expired or met a server error goes back to the engine to run
again in a later file; a prompt the batch left unanswered does too.

Resume reattaches: files in flight in the checkpoint are carried on from their state,
their prompts never written into another file. A batch that fails validation (a bad
line, the provider's enqueued-token quota) stops the job with the provider's reason in
one line, its prompts left pending.

A stop (Ctrl+C, the dashboard's `x`) cancels the batches in flight at the provider: what
they finished is kept there, and resume reads it and sends only the rest. Once every
answer of a batch is stored, its input and result files are deleted at the provider
(unless the job keeps them).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable

from tui_batch.backends.remote.batch_client import BatchClient, BatchState, ProviderUnreachable
from tui_batch.backends.remote.batch_flights import BatchNews, Flight, OpenFile, Waiting
from tui_batch.backends.remote.batch_wire import (
    InputFile,
    custom_id,
    parse_custom_id,
    read_line,
    request_body,
    request_line,
)
from tui_batch.backends.remote.chat_wire import (
    MalformedAnswer,
)
from tui_batch.backends.remote.openai_api import Secret
from tui_batch.backends.remote.request_form import server_request_form
from tui_batch.core.backend import Backend, BackendStatus, Completion, RequestForm, Task
from tui_batch.core.batch_records import ENDED, BatchRecords
from tui_batch.core.errors import ServerError
from tui_batch.core.jobs import BatchJob, Prompt
from tui_batch.core.progress import format_duration
from tui_batch.core.servers import ServerSettings

# How long a step waits at most when nothing is due (the engine checks for a stop
# between steps).
STEP_WAIT = 0.5
# Tries of a cancel on a stop (a provider out of reach must not hold the stop up long).
CANCEL_TRIES = 2
# Lines of a result file read in one step: the answers handed to the engine at once
# (stored together: they can be read again until stored, see `replayable`).
INGEST_CHUNK = 5_000


class BatchApiBackend(Backend):
    """Runs a job's prompts as batches at one provider (see the module doc)."""

    replayable = True

    def __init__(
        self,
        server: ServerSettings,
        model: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server, self.model = server, model
        self.max_lines, self.max_bytes = server.batch_max_lines, int(server.batch_max_mb * 1e6)
        self.files_in_flight = server.batch_files
        self.clock, self.sleep = clock, sleep
        self.capacity = self.max_lines * self.files_in_flight
        self.url = server.endpoints[0].url
        self.client: BatchClient | None = None
        self._gathered: deque[Task] = deque()  # given while no file has room
        self._open: OpenFile | None = None
        self._flights: dict[int, Flight] = {}
        self._replay: dict[int, int] = {}  # prompt index -> its ended file, after a resume
        self._next = 1  # the next file's number
        self._stop: str | None = None
        self._unsendable: list[Completion] = []  # prompts too large for any file
        self._ended = False  # a file ended at the last step
        self.news = BatchNews()
        self._status: BackendStatus | None = None

    # -- the engine's protocol ----------------------------------------------------------

    def begin(self, job: BatchJob, on_token: object = None) -> None:
        self.job = job
        self.settings = job.settings
        assert job.checkpoint_file is not None
        self.records = BatchRecords(job.checkpoint_file)
        if self.client is None:
            self.client = BatchClient(self.url, Secret(self.server.api_key_env), sleep=self.sleep)
        self._stop = None
        self._flights, self._gathered, self._open = {}, deque(), None  # a run's own
        # Only what is in flight, and the prompts answered and never stored, are read
        # into memory: a resumed job of any size begins in the same memory.
        for record in self.records.files():
            if record.in_flight:  # its prompts awaited again as the engine gives them
                lines = self.records.lines_of(record.number).values()
                self._flights[record.number] = Flight(record, Waiting(lines, False), resumed=True)
        self._replay = self.records.unread()
        self._next = self.records.next_number()
        self._delete_stored()
        self._publish()

    def close(self) -> None:
        for flight in self._flights.values():
            if flight.upload is not None:
                flight.upload.close()
                flight.upload = None
        if self._open is not None:
            self._open.upload.close()
            self._open = None
        if self.client is not None:
            self._delete_stored()
            self.client.close()
            self.client = None

    def request_form(self, job: BatchJob) -> RequestForm:
        """As a live job on the same servers: one model's answers, however they came."""
        return server_request_form(self.server, self.model, job.settings)

    def status(self) -> BackendStatus:
        """The latest snapshot (taken after each step): the batches as lines, and what
        was said of them since the last."""
        return self._status or BackendStatus(0, 0, self.capacity, batch_api=True)

    @property
    def in_flight(self) -> int:
        written = len(self._open.indices) if self._open is not None else 0
        return len(self._gathered) + written + sum(len(f.tasks) for f in self._flights.values())

    def submit(self, task: Task) -> None:
        replayed = self._replay.pop(task.index, None)
        if any(f.resumed and f.tasks.add(task.index) for f in self._flights.values()):
            return  # its line is out there already, in a file resume found in flight
        if replayed is not None:  # answered in an ended file, never stored
            key = -replayed  # beside the file's own number, which has ended
            if key not in self._flights:
                lines = self.records.lines_of(replayed).values()
                self._flights[key] = Flight(
                    self.records.file(replayed), Waiting(lines, False), replay=True
                )
            self._flights[key].tasks.add(task.index)
        elif self._gathered or not self._write(task):
            self._gathered.append(task)

    def abort(self) -> list[int]:
        """The engine stops: what it gave back stays pending. A stop asked for cancels
        the batches in flight at the provider (recorded `cancelling`: resume reads what
        they finished); on a stop of its own (the provider refused or is out of reach)
        they are left there, recorded, for resume to reattach to."""
        dropped = [task.index for task in self._gathered]
        if self._open is not None:  # never recorded: its prompts simply stay pending
            dropped += list(self._open.indices)
            self._open.upload.close()
            self._open = None
        for flight in self._flights.values():
            dropped += list(flight.tasks)
            flight.tasks.clear()
            flight.reading = None  # a result file part read: read again on resume
            if self._stop is None and not flight.replay:
                self._cancel(flight)
        self._gathered.clear()
        self._publish()
        return dropped

    def _cancel(self, flight: Flight) -> None:
        record = flight.record
        if record.state != "created" or record.batch_id is None or record.status in ENDED:
            return
        assert self.client is not None
        try:
            batch = self.client.cancel(record.batch_id, tries=CANCEL_TRIES)
        except ServerError as exc:
            self.news.say(f"batch {record.number} ({record.batch_id}) not cancelled: {exc}")
            return
        self._polled(flight, batch)

    def stop_reason(self) -> str | None:
        return self._stop

    def step(self) -> list[Completion]:
        if self._ended:  # the engine stored the last step's answers: their files may go
            self._ended = False
            self._delete_stored()
        self._seal()
        finished, self._unsendable = self._unsendable, []
        now = self.clock()
        for number, flight in list(self._flights.items()):
            finished += self._advance(flight, now)
            if not flight.record.in_flight and not flight.tasks:
                del self._flights[number]
                self._ended = True
            if self._stop is not None:
                break
        self._publish()
        reading = any(f.reading is not None for f in self._flights.values())
        if not finished and not reading and self._stop is None:
            due = [f.next_poll for f in self._flights.values()]
            wait = min(due, default=now + STEP_WAIT) - self.clock()
            self.sleep(max(0.0, min(STEP_WAIT, wait)))
        return finished

    def _publish(self) -> None:
        """A snapshot for other threads: a line for each batch in flight."""
        in_flight = [f.record for n, f in sorted(self._flights.items()) if n > 0]
        in_batches = sum(len(f.tasks) for f in self._flights.values())
        self._status = self.news.status(in_flight, in_batches, len(self._gathered), self.capacity)

    def _delete_stored(self) -> None:
        """Delete at the provider the files of each batch whose answers are all stored
        (unless the job keeps them); a file already gone is not an error."""
        if self.server.batch_keep_files or self.client is None or not hasattr(self, "records"):
            return
        for record in self.records.stored():
            try:
                for file_id in (record.file_id, record.output_file_id, record.error_file_id):
                    if file_id is not None:
                        self.client.delete(file_id)
            except ServerError as exc:
                self.news.say(f"batch {record.number}: its files are kept at the provider: {exc}")
                return
            self.records.deleted(record.number)

    # -- files --------------------------------------------------------------------------

    def _write(self, task: Task) -> bool:
        """Write the task's line into the open file (opening one); False where the file
        is full. A prompt too large for any file fails at once."""
        if self._open is None:
            self._open = OpenFile(self._next, InputFile(self.max_lines, self.max_bytes))
            self._next += 1
        line = self._line(custom_id(self.job.job_id, task.index, self._open.number), task.prompt)
        if not self._open.upload.fits(line):
            self._unsendable.append(self._too_large(task.index, len(line)))
        elif not self._open.upload.add(line):
            return False
        else:
            self._open.indices.append(task.index)
        return True

    def _seal(self) -> None:
        """Seal the open file once it is full, or the engine has no more to give (it
        gave less than it may), while fewer files than the job allows are in flight;
        the prompts gathered meanwhile go into the next."""
        engine_done = self.in_flight < self.capacity
        while True:
            while self._gathered and self._write(self._gathered[0]):
                self._gathered.popleft()
            if self._open is None:
                return
            flying = sum(1 for number in self._flights if number > 0)
            full = bool(self._gathered) or self._open.upload.lines >= self.max_lines
            if flying >= self.files_in_flight or not (full or engine_done):
                return
            self._seal_open(self._open)
            self._open = None

    def _seal_open(self, written: OpenFile) -> None:
        """Record the open file's lines, then take it into flight (to be uploaded)."""
        if not written.indices:
            written.upload.close()
            return
        number = written.number
        self.records.written(
            number, ((custom_id(self.job.job_id, i, number), i) for i in written.indices)
        )
        record = self.records.file(number)
        self.news.said_of(record)
        self._flights[number] = Flight(record, Waiting(written.indices, True), written.upload)

    def _too_large(self, index: int, size: int) -> Completion:
        error = (
            f"its request is {size:,} bytes, more than a batch file may hold "
            f"({self.max_bytes:,}: --batch-max-mb)"
        )
        return Completion(index, error=error, retryable=False, endpoint=self.url)

    def _advance(self, flight: Flight, now: float) -> list[Completion]:
        """Take the file one state on, as far as it can go now."""
        try:
            return self._step_file(flight, now)
        except ProviderUnreachable as exc:
            self._unreachable(flight, now, str(exc))
        except ServerError as exc:  # the provider refuses: the job stops, resumable
            self._stop = str(exc)
        return []

    def _step_file(self, flight: Flight, now: float) -> list[Completion]:
        """The file's next step(s): upload, create, poll, read."""
        assert self.client is not None
        record = flight.record
        if flight.reading is not None:
            return self._ingest(flight, *flight.ending)
        if flight.replay:
            return self._ingest(
                flight,
                record.status or "completed",
                record.batch_id,
                record.output_file_id,
                record.error_file_id,
            )
        if now < flight.next_poll:
            return []
        if record.state == "written":
            if flight.upload is None:  # after a resume: written again from its lines
                flight.upload = self._rewrite(flight)
            file_id = self.client.upload(
                f"{self.job.job_id}-{record.number}.jsonl", flight.upload.ready()
            )
            flight.failing_since = None
            self.records.uploaded(record.number, file_id)
            flight.upload.close()
            flight.upload = None
            record = flight.record = self.records.file(record.number)
            self.news.said_of(record)
        if record.state == "uploaded":
            self.records.creating(record.number)
            record = flight.record = self.records.file(record.number)
        if record.state == "creating":
            assert record.file_id is not None
            metadata = {"tui_batch_job": self.job.job_id, "file": str(record.number)}
            look_first = flight.resumed or flight.create_tried
            flight.create_tried = True  # a failure may have made it: look before again
            batch = self.client.create_once(record.file_id, metadata, look_first)
            flight.failing_since = None
            self.records.created(record.number, batch.id)
            flight.record = self.records.file(record.number)
            self._polled(flight, batch)
            flight.wait = self.server.batch_poll
            flight.next_poll = now + flight.wait
            return []
        if record.state == "created":
            assert record.batch_id is not None
            batch = self.client.retrieve(record.batch_id)
            flight.failing_since = None
            self._polled(flight, batch)
            if not batch.ended:
                grown = flight.wait * 1.5 if flight.wait else self.server.batch_poll
                flight.wait = min(self.server.batch_poll_most, grown)
                flight.next_poll = now + flight.wait
                return []
            if batch.status == "failed":
                return self._refused(flight, batch)
            return self._ingest(
                flight, batch.status, batch.id, batch.output_file_id, batch.error_file_id
            )
        return []

    def _unreachable(self, flight: Flight, now: float, said: str) -> None:
        """The provider failed the file's step for a reason that passes: tried again
        later (waits growing from a second to a minute); past the job's `give_up_after`
        (0: never) the job stops, resumable. A result file part read is read again."""
        flight.reading = None
        if flight.failing_since is None:
            flight.failing_since, flight.retry_wait = now, 0.0
        out_for = now - flight.failing_since
        limit = self.server.give_up_after
        if limit and out_for >= limit:
            self._stop = f"{said} (failing for {format_duration(out_for)}: --give-up-after)"
            return
        flight.retry_wait = min(60.0, max(1.0, flight.retry_wait * 2))
        flight.next_poll = now + flight.retry_wait
        self.news.say(
            f"batch {flight.record.number}: {said}; tried again in {flight.retry_wait:.0f}s"
        )

    def _rewrite(self, flight: Flight) -> InputFile:
        """A resumed file's lines, made again from its prompts (the same ids)."""
        lines = self.records.lines_of(flight.record.number)
        upload = InputFile(len(lines), 2**62)  # they fitted when first written
        for line_id, index in sorted(lines.items(), key=lambda item: item[1]):
            upload.add(self._line(line_id, self.job.prompts[index]))
        return upload

    def _line(self, line_id: str, prompt: Prompt) -> bytes:
        """The prompt's line of an input file, under its custom id."""
        return request_line(line_id, request_body(prompt, self.settings, self.model))

    def _polled(self, flight: Flight, batch: BatchState) -> None:
        """Record what the provider said of the file's batch (its times, creation's
        included, all on its clock)."""
        record = flight.record
        self.records.status(record.number, batch.status, **batch.progress(record.created_at))
        flight.record = self.records.file(flight.record.number)
        self.news.said_of(flight.record)

    def _refused(self, flight: Flight, batch: BatchState) -> list[Completion]:
        """A batch that failed validation: the job stops with the provider's reason, its
        prompts left pending (nothing of them is stored)."""
        reasons = "; ".join(batch.errors) or "no reason given"
        self._stop = f"the provider refused batch {batch.id}: {reasons}"
        self.records.ended(flight.record.number, "failed", None, None)
        flight.record = self.records.file(flight.record.number)
        return []

    def _ingest(
        self,
        flight: Flight,
        status: str,
        batch_id: str | None,
        output_file_id: str | None = None,
        error_file_id: str | None = None,
    ) -> list[Completion]:
        """An ended batch's answers: its result files read line by line, INGEST_CHUNK
        lines a step, each answer to its prompt; once all are read, a prompt it left
        unanswered goes back to run again (a cancel's: in the next file, as it was)."""
        assert self.client is not None
        client = self.client
        if flight.reading is None:
            flight.ending = (status, batch_id, output_file_id, error_file_id)
            flight.reading = itertools.chain.from_iterable(
                client.lines(file_id) for file_id in (output_file_id, error_file_id) if file_id
            )
        finished: list[Completion] = []
        read = 0
        for raw in itertools.islice(flight.reading, INGEST_CHUNK):
            flight.failing_since = None
            read += 1
            completion = self._answer(flight, raw)
            if completion is not None:
                finished.append(completion)
        if read == INGEST_CHUNK:
            return finished  # more to read at the next step
        flight.reading = None
        left = list(flight.tasks)
        if not flight.replay:
            self.records.ended(flight.record.number, status, output_file_id, error_file_id)
        flight.record = self.records.file(flight.record.number)
        self.news.said_of(flight.record)
        if flight.resumed:
            self._after_resumed(flight, left)
            return finished
        for index in left:
            if status == "cancelled":  # a stop's: not the prompt's failure, sent again
                self._gathered.append(Task(index, self.job.prompts[index]))
            else:
                error = f"not answered by batch {batch_id} ({status})"
                finished.append(Completion(index, error=error, endpoint=self.url))
        flight.tasks.clear()
        return finished

    def _after_resumed(self, flight: Flight, left: list[int]) -> None:
        """A file resume found in flight is read: the engine gives its prompts back as
        it can, some after the file was read. Those it gave too late (awaited, their
        lines read before) are read again from the ended file; those it has yet to give
        are read then. Nothing is sent twice."""
        number = flight.record.number
        for index, ended in self.records.unread().items():
            if ended == number and not flight.tasks.answered(index):
                self._replay.setdefault(index, number)
        if left:
            again = self._flights.get(-number)
            if again is None:
                again = Flight(flight.record, Waiting(flight.tasks.indices, False), replay=True)
                self._flights[-number] = again
            for index in left:
                again.tasks.add(index)
                self._replay.pop(index, None)
        flight.tasks.clear()

    def _answer(self, flight: Flight, raw: str) -> Completion | None:
        """One line of a result file as the engine's completion; None for a line that is
        not one of this file's prompts now waiting (another job's, or answered)."""
        try:
            answer = read_line(raw)
        except MalformedAnswer:
            return None
        found = parse_custom_id(answer.custom_id, self.job.job_id)
        if found is None or found[1] != flight.record.number or not flight.tasks.take(found[0]):
            return None  # not this file's, answered already (a line read twice), or stored
        return answer.completion(found[0], self.url)
