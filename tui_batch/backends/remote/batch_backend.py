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

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tui_batch.backends.remote.batch_client import ENDED, BatchClient, BatchState
from tui_batch.backends.remote.batch_wire import (
    BatchAnswer,
    custom_id,
    parse_custom_id,
    read_line,
    request_line,
    split_lines,
)
from tui_batch.backends.remote.chat_wire import (
    MalformedAnswer,
    chat_request,
    reasoning_fields,
    structured_output,
)
from tui_batch.backends.remote.openai_api import Secret
from tui_batch.backends.remote.request_form import server_request_form
from tui_batch.core.backend import Backend, BackendStatus, Completion, RequestForm, Task
from tui_batch.core.batch_records import BatchFile, BatchRecords, describe
from tui_batch.core.cache.key import reproducible, sampling_of
from tui_batch.core.errors import ServerError
from tui_batch.core.jobs import BatchJob, Prompt
from tui_batch.core.reasoning import INCOMPLETE_THOUGHT, from_parts, incomplete
from tui_batch.core.servers import ServerSettings

# How long a step waits at most when nothing is due (the engine checks for a stop
# between steps).
STEP_WAIT = 0.5
# Tries of a cancel on a stop (a provider out of reach must not hold the stop up long).
CANCEL_TRIES = 2
# The latest lines said of the batches, kept for a dashboard and the command line.
KEPT_CHANGES = 20


@dataclass(slots=True)
class _Flight:
    """A file in flight: its record, its lines and the tasks waiting on them."""

    record: BatchFile
    lines: dict[str, tuple[int, int]]  # custom id -> prompt index, line attempt
    data: bytes | None = None  # its lines, until uploaded (none after a resume)
    next_poll: float = 0.0
    wait: float = 0.0
    tasks: dict[int, Task] = field(default_factory=dict)  # prompt index -> its task
    # An ended file read again: a run stopped after its answers were read and before
    # the engine stored them all (resume reads them again rather than pay twice).
    replay: bool = False
    # Found in flight by resume: one found `creating` may have a batch already.
    resumed: bool = False


class BatchApiBackend(Backend):
    """Runs a job's prompts as batches at one provider (see the module doc)."""

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
        self._gathered: list[Task] = []
        self._flights: dict[int, _Flight] = {}
        self._attached: dict[int, int] = {}  # prompt index -> its file, after a resume
        self._replay: dict[int, int] = {}  # prompt index -> its ended file, after a resume
        self._ended: dict[int, tuple[BatchFile, dict[str, tuple[int, int]]]] = {}
        self._attempts: dict[int, int] = {}  # prompt index -> its last line attempt
        self._stop: str | None = None
        self._said: dict[int, str] = {}  # file number -> the last line said of it
        self._changes: list[str] = []
        self._change_count = 0
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
        latest: dict[int, int] = {}  # prompt index -> the file of its last line
        for record in self.records.files():
            lines = self.records.lines_of(record.number)
            for index, attempt in lines.values():
                if attempt > self._attempts.get(index, 0):
                    self._attempts[index], latest[index] = attempt, record.number
            if record.in_flight:
                self._flights[record.number] = _Flight(record, lines, resumed=True)
            elif record.status != "failed" and (record.output_file_id or record.error_file_id):
                self._ended[record.number] = (record, lines)
        for index, number in latest.items():
            if number in self._flights:
                self._attached[index] = number
            elif number in self._ended:
                self._replay[index] = number
        self._delete_stored()
        self._publish()

    def close(self) -> None:
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
        return len(self._gathered) + sum(len(f.tasks) for f in self._flights.values())

    def submit(self, task: Task) -> None:
        number = self._attached.pop(task.index, None)
        replayed = self._replay.pop(task.index, None)
        if number is not None and number in self._flights:
            self._flights[number].tasks[task.index] = task  # its line is already out there
        elif replayed is not None:  # answered in an ended file, never stored
            key = -replayed  # beside the file's own number, which has ended
            if key not in self._flights:
                record, lines = self._ended[replayed]
                self._flights[key] = _Flight(record, lines, replay=True)
            self._flights[key].tasks[task.index] = task
        else:
            self._gathered.append(task)

    def abort(self) -> list[int]:
        """The engine stops: what it gave back stays pending. A stop asked for cancels
        the batches in flight at the provider (recorded `cancelling`: resume reads what
        they finished); on a stop of its own (the provider refused or is out of reach)
        they are left there, recorded, for resume to reattach to."""
        dropped = [task.index for task in self._gathered]
        for flight in self._flights.values():
            dropped += list(flight.tasks)
            flight.tasks.clear()
            if self._stop is None and not flight.replay:
                self._cancel(flight)
        self._gathered.clear()
        self._publish()
        return dropped

    def _cancel(self, flight: _Flight) -> None:
        record = flight.record
        if record.state != "created" or record.batch_id is None or record.status in ENDED:
            return
        assert self.client is not None
        try:
            batch = self.client.cancel(record.batch_id, tries=CANCEL_TRIES)
        except ServerError as exc:
            self._say(f"batch {record.number} ({record.batch_id}) not cancelled: {exc}")
            return
        self._polled(flight, batch)

    def stop_reason(self) -> str | None:
        return self._stop

    def step(self) -> list[Completion]:
        self._seal()
        finished: list[Completion] = []
        now = self.clock()
        for number, flight in list(self._flights.items()):
            finished += self._advance(flight, now)
            if not flight.record.in_flight and not flight.tasks:
                del self._flights[number]
            if self._stop is not None:
                break
        self._publish()
        if not finished and self._stop is None:
            due = [f.next_poll for f in self._flights.values()]
            wait = min(due, default=now + STEP_WAIT) - self.clock()
            self.sleep(max(0.0, min(STEP_WAIT, wait)))
        return finished

    # -- what is said of the batches ----------------------------------------------------

    def _publish(self) -> None:
        """A snapshot for other threads: a line for each batch in flight."""
        now = time.time()
        lines = tuple(
            describe(flight.record, now)
            for number, flight in sorted(self._flights.items())
            if number > 0 and flight.record.in_flight
        )
        self._status = BackendStatus(
            in_flight=sum(len(f.tasks) for f in self._flights.values()),
            waiting=len(self._gathered),
            concurrency=self.capacity,
            changes=tuple(self._changes),
            change_count=self._change_count,
            batch_api=True,
            batches=lines,
        )

    def _say(self, line: str) -> None:
        self._changes = [*self._changes[-(KEPT_CHANGES - 1) :], line]
        self._change_count += 1

    def _said_of(self, record: BatchFile) -> None:
        """Say a file's line where its status or counts changed (not its times)."""
        key = (record.batch_id is None, record.status, record.completed, record.failed)
        if self._said.get(record.number) != repr(key):
            self._said[record.number] = repr(key)
            self._say(describe(record, time.time()))

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
                self._say(f"batch {record.number}: its files are kept at the provider: {exc}")
                return
            self.records.deleted(record.number)

    # -- files --------------------------------------------------------------------------

    def _seal(self) -> None:
        """Write the gathered prompts into files: a full file's worth at once, the rest
        when the engine has nothing more to give."""
        room = self.files_in_flight - len(self._flights)
        engine_done = self.in_flight < self.capacity
        while self._gathered and room > 0:
            if len(self._gathered) < self.max_lines and not engine_done:
                return
            tasks = self._gathered[: self.max_lines]
            lines = []
            for task in tasks:
                attempt = self._attempts.get(task.index, 0) + 1
                self._attempts[task.index] = attempt
                body = self._body(task.prompt)
                lines.append((custom_id(self.job.job_id, task.index, attempt), body, task))
            data = [request_line(line_id, body) for line_id, body, _ in lines]
            files = list(split_lines(data, self.max_lines, self.max_bytes))
            taken = len(files[0])
            kept = lines[:taken]
            number = self.records.written(
                (line_id, task.index, self._attempts[task.index]) for line_id, _, task in kept
            )
            record = self.records.file(number)
            self._said_of(record)
            flight = _Flight(
                record,
                {line_id: (task.index, self._attempts[task.index]) for line_id, _, task in kept},
                b"".join(files[0]),
                tasks={task.index: task for _, _, task in kept},
            )
            self._flights[number] = flight
            for _, _, task in lines[taken:]:
                self._attempts[task.index] -= 1  # not written: its attempt is not used
            del self._gathered[:taken]
            room -= 1

    def _advance(self, flight: _Flight, now: float) -> list[Completion]:
        """Take the file one state on, as far as it can go now."""
        assert self.client is not None
        record = flight.record
        try:
            if flight.replay:
                return self._ingest(flight, record.status or "completed", record.batch_id)
            if record.state == "written":
                if flight.data is None:  # after a resume: written again from its lines
                    flight.data = self._rewrite(flight)
                file_id = self.client.upload(
                    f"{self.job.job_id}-{record.number}.jsonl", flight.data
                )
                self.records.uploaded(record.number, file_id)
                flight.data = None
                record = flight.record = self.records.file(record.number)
                self._said_of(record)
            if record.state == "uploaded":
                self.records.creating(record.number)
                record = flight.record = self.records.file(record.number)
            if record.state == "creating":
                assert record.file_id is not None
                metadata = {"tui_batch_job": self.job.job_id, "file": str(record.number)}
                batch = self.client.create_once(record.file_id, metadata, flight.resumed)
                self.records.created(record.number, batch.id)
                flight.record = self.records.file(record.number)
                self._polled(flight, batch)
                flight.wait = self.server.batch_poll
                flight.next_poll = now + flight.wait
                return []
            if record.state == "created" and now >= flight.next_poll:
                assert record.batch_id is not None
                batch = self.client.retrieve(record.batch_id)
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
        except ServerError as exc:  # the provider cannot be reached now: the job stops
            self._stop = str(exc)
        return []

    def _body(self, prompt: Prompt) -> dict[str, object]:
        """A line's request: as a live one, not streamed, with the schema as OpenAI's
        `response_format` and the job's reasoning fields as they are (a provider that
        refuses one fails the line with its reason)."""
        body = chat_request(prompt, self.settings, self.model, stream=False)
        schema = self.settings.schema
        if schema is not None:
            body.update(structured_output("json_schema", schema))
        body.update(reasoning_fields(self.settings))
        return body

    def _rewrite(self, flight: _Flight) -> bytes:
        """A resumed file's lines, made again from its prompts (the same ids)."""
        data = [
            request_line(line_id, self._body(self.job.prompts[index]))
            for line_id, (index, _) in flight.lines.items()
        ]
        return b"".join(data)

    def _polled(self, flight: _Flight, batch: BatchState) -> None:
        """Record what the provider said of the file's batch."""
        self.records.status(
            flight.record.number,
            batch.status,
            total=batch.total,
            completed=batch.completed,
            failed=batch.failed,
            started_at=batch.started_at,
            finished_at=batch.finished_at,
            expires_at=batch.expires_at,
        )
        flight.record = self.records.file(flight.record.number)
        self._said_of(flight.record)

    def _refused(self, flight: _Flight, batch: BatchState) -> list[Completion]:
        """A batch that failed validation: the job stops with the provider's reason, its
        prompts left pending (nothing of them is stored)."""
        reasons = "; ".join(batch.errors) or "no reason given"
        self._stop = f"the provider refused batch {batch.id}: {reasons}"
        self.records.ended(flight.record.number, "failed", None, None)
        flight.record = self.records.file(flight.record.number)
        return []

    def _ingest(
        self,
        flight: _Flight,
        status: str,
        batch_id: str | None,
        output_file_id: str | None = None,
        error_file_id: str | None = None,
    ) -> list[Completion]:
        """An ended batch: its answers, read line by line, each to its prompt; a prompt
        it left unanswered goes back to run again."""
        assert self.client is not None
        if flight.replay:
            output_file_id = flight.record.output_file_id
            error_file_id = flight.record.error_file_id
        finished: dict[int, Completion] = {}
        for file_id in (output_file_id, error_file_id):
            if file_id is None:
                continue
            for raw in self.client.lines(file_id):
                completion = self._answer(flight, raw)
                if completion is not None:
                    finished.setdefault(completion.index, completion)
        for index, task in flight.tasks.items():
            if index in finished:
                continue
            if status == "cancelled":  # a stop's: not the prompt's failure, sent again
                self._gathered.append(task)
            else:
                error = f"not answered by batch {batch_id} ({status})"
                finished[index] = Completion(index, error=error, endpoint=self.url)
        flight.tasks.clear()
        if not flight.replay:
            self.records.ended(flight.record.number, status, output_file_id, error_file_id)
        flight.record = self.records.file(flight.record.number)
        self._said_of(flight.record)
        return list(finished.values())

    def _answer(self, flight: _Flight, raw: str) -> Completion | None:
        """One line of a result file as the engine's completion; None for a line that is
        not one of this file's prompts now waiting (another job's, or answered)."""
        try:
            answer: BatchAnswer = read_line(raw)
        except MalformedAnswer:
            return None
        found = parse_custom_id(answer.custom_id, self.job.job_id)
        if found is None or answer.custom_id not in flight.lines:
            return None
        index = found[0]
        if index not in flight.tasks:
            return None
        if answer.piece is None:
            status = answer.status_code
            retryable = answer.expired or status is None or status >= 500 or status == 429
            return Completion(index, error=answer.error, retryable=retryable, endpoint=self.url)
        piece = answer.piece
        tokens_in, tokens_out = piece.usage or (0, 0)
        thought = from_parts(piece.text, piece.reasoning)
        if incomplete(thought.reasoning, thought.answer, thought.closed):
            # A thought with no answer: run again only where a rerun may think otherwise.
            again = not reproducible(sampling_of(flight.tasks[index].prompt, self.settings))
            return Completion(
                index,
                error=INCOMPLETE_THOUGHT,
                reasoning=thought.reasoning,
                reasoning_tokens=piece.reasoning_tokens,
                finish_reason=piece.finish_reason,
                endpoint=self.url,
                retryable=again,
            )
        return Completion(
            index,
            response_text=thought.answer,
            tokens_input=tokens_in,
            tokens_output=tokens_out,
            finish_reason=piece.finish_reason,
            reasoning=thought.reasoning,
            reasoning_tokens=piece.reasoning_tokens,
            endpoint=self.url,
            retryable=False,
        )
