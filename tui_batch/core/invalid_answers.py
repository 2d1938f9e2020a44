"""Answers that broke a job's schema, while their prompt is run again.

Each one is checked as it finishes (`check_answer`); one that broke the schema is kept
as an attempt of its prompt (its answer and error in the attempt log), and the prompt
runs again with a seed of its own (the same in every run of the job), at a temperature
above 0, until `invalid_retries` are spent: then the last answer is the result, marked
`invalid`. A result made after such reruns carries their attempts and requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tui_batch.core.backend import Completion
from tui_batch.core.jobs import Attempt, BatchJob, Prompt
from tui_batch.core.structured.check import check_answer

# An answer that broke the schema is run again with a new seed; a greedy job's at this
# temperature, since greedy decoding would give the same answer again.
INVALID_RETRY_TEMPERATURE = 0.7


@dataclass(slots=True)
class InvalidRuns:
    """A prompt's answers that broke the job's schema while it is run again: how many,
    each kept as an attempt, and the requests they took."""

    count: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    requests: int = 0


class InvalidAnswers:
    """The prompts of a run whose answers broke `job`'s schema, while they run again."""

    def __init__(self, job: BatchJob) -> None:
        self.job = job
        self._runs: dict[int, InvalidRuns] = {}

    def check(self, completion: Completion, started_at: str) -> str | None:
        """Check an answer against the job's schema (if it has one). An answer that broke
        it is kept as an attempt of its prompt and its error returned, to run it again;
        the last one allowed becomes an `invalid` completion, its error saying why."""
        schema = self.job.settings.schema
        if schema is None or not completion.success:
            return None
        checked = check_answer(schema, completion.response_text, completion.finish_reason)
        if checked.valid:
            completion.output = checked.value
            if schema.choices:  # the label alone (a server may send it as a JSON string)
                completion.response_text = checked.value
            return None
        runs = self._runs.setdefault(completion.index, InvalidRuns())
        runs.count += 1
        if runs.count > self.job.invalid_retries:
            completion.invalid = True
            completion.error = checked.error
            return None
        log = completion.attempt_log or [
            Attempt(self.job.model_id, started_at=started_at, tokens_input=completion.tokens_input)
        ]
        answer = replace(
            log[-1],
            error=f"invalid: {checked.error}",
            answer=completion.response_text,
            tokens_output=completion.tokens_output,
        )
        runs.attempts += [*log[:-1], answer]
        runs.requests += completion.attempts or 1
        return checked.error

    def rerun(self, prompt: Prompt, index: int) -> Prompt:
        """Prompt `index` as it runs next: after answers that broke the schema, with a
        new seed of its own (the same in every run of the job) and a temperature."""
        runs = self._runs.get(index)
        if runs is None:
            return prompt
        options = prompt.options
        base = options.get("seed", self.job.settings.seed) or 0
        seed = (base + 7919 * runs.count + 104729 * index) % 2**31
        temperature = options.get("temperature", self.job.settings.temperature)
        if temperature == 0:
            temperature = INVALID_RETRY_TEMPERATURE
        return replace(prompt, options={**options, "seed": seed, "temperature": temperature})

    def earlier(self, index: int) -> InvalidRuns:
        """What prompt `index`'s answers that broke the schema took so far (none: empty)."""
        return self._runs.get(index) or InvalidRuns()

    def settled(self, index: int) -> None:
        """Prompt `index` has its result: forget its reruns."""
        self._runs.pop(index, None)
