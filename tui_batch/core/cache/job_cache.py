"""The answer cache as one run of a job uses it: which prompts it can serve, and which
answers it keeps.

Only answers that can be reproduced are kept: succeeded (and valid, where the job has a
schema), stopped on their own (not cut off by max tokens), not empty, greedy or sampled
with a fixed seed, and answered by the request the key describes (an answer that came
after invalid ones was run again with another seed). Errors never are. A served answer
is checked against the job's schema again; one that fails is a miss.

A cache that cannot be used (damaged, locked too long, a full disk) is said once through
`warn`; the job then runs on without it, and nothing of the job is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from tui_batch.core.backend import Backend, RequestForm
from tui_batch.core.cache.answers import AnswerCache, CachedAnswer
from tui_batch.core.cache.key import KeyMaker
from tui_batch.core.errors import CacheError, TuiBatchError
from tui_batch.core.jobs import BatchJob, BatchResult, utc_now
from tui_batch.core.paths import cache_path
from tui_batch.core.structured.check import check_answer

WITHOUT = "; the job runs without it"


class JobCache:
    """The cache file opened for `job`, its prompts keyed as `backend` sends them."""

    def __init__(
        self,
        job: BatchJob,
        cache: AnswerCache,
        maker: KeyMaker,
        form: RequestForm,
        warn: Callable[[str], None],
    ) -> None:
        self.job = job
        self.cache = cache
        self.maker = maker
        self.label = form.label
        self.keys: dict[int, bytes] = {}
        self._render = form.render
        self._waiting: list[tuple[bytes, str, CachedAnswer]] = []
        self._warn = warn
        self.broken = False
        # Answers kept this run, and those left out by why (for the run's summary).
        self.kept = 0
        self.left_out: dict[str, int] = {}

    @classmethod
    def open(
        cls, job: BatchJob, backend: Backend, warn: Callable[[str], None], path: Path | None = None
    ) -> JobCache | None:
        """The cache for a run of `job` on `backend`, or None: the job does not use it,
        its backend's answers cannot be keyed, or the file cannot be used (said)."""
        if job.cache == "off":
            return None
        try:
            form = backend.request_form(job)
            if form is None:
                warn("the answer cache is not used: this backend's answers cannot be keyed")
                return None
            cache = AnswerCache(path or cache_path())
            try:
                model = form.model
                if form.model_file is not None:
                    model = f"{model} sha256:{cache.file_digest(form.model_file)}"
            except BaseException:
                cache.close()
                raise
        except TuiBatchError as exc:
            warn(f"{exc}{WITHOUT}")
            return None
        return cls(job, cache, KeyMaker(model, job.settings), form, warn)

    def key(self, index: int) -> bytes | None:
        """Prompt `index`'s key (made once), None when its answer is never cached."""
        if index not in self.keys:
            prompt = self.job.prompts[index]
            try:
                rendered = self._render(prompt)
            except TuiBatchError:
                raise
            except Exception:  # noqa: BLE001 - a prompt the template refuses fails when run
                return None
            key = self.maker.key(rendered, prompt)
            if key is None:
                return None
            self.keys[index] = key
        return self.keys[index]

    def serve(self, indices: Iterable[int]) -> dict[int, BatchResult]:
        """Results for the prompts among `indices` that the cache answers."""
        if self.broken:
            return {}
        try:
            wanted = {key: index for index in indices if (key := self.key(index)) is not None}
            found = self.cache.get_many(list(wanted))
        except TuiBatchError as exc:
            self._give_up(exc)
            return {}
        served = {}
        now = utc_now()
        schema = self.job.settings.schema
        for key, answer in found.items():
            output = answer.output
            if schema is not None:
                checked = check_answer(schema, answer.response_text, answer.finish_reason)
                if not checked.valid:
                    continue
                output = checked.value
            index = wanted[key]
            del self.keys[index]  # answered: its key is not needed again
            served[index] = BatchResult(
                prompt_index=index,
                prompt=self.job.prompts[index].text,
                response_text=answer.response_text,
                tokens_input=answer.tokens_input,
                tokens_output=answer.tokens_output,
                duration=0.0,
                custom_id=self.job.custom_id(index),
                attempts=0,
                finish_reason=answer.finish_reason,
                started_at=now,
                completed_at=now,
                token_counts=answer.token_counts,
                output=output,
                cached_from=answer.job_id,
                reasoning=answer.reasoning,
                reasoning_tokens=answer.reasoning_tokens,
            )
        return served

    def keep(self, result: BatchResult, rerun: bool) -> None:
        """Keep `result` for the cache if it can be reproduced (`rerun`: it came after
        answers that broke the schema, from another seed: it cannot)."""
        try:
            self._keep(result, rerun)
        finally:
            self.keys.pop(result.prompt_index, None)  # its prompt is done: memory stays flat

    def _keep(self, result: BatchResult, rerun: bool) -> None:
        if self.broken or not self.job.options.cache_writes or result.cached_from is not None:
            return
        why = _not_kept(result, rerun)
        if why is None:
            try:
                key = self.key(result.prompt_index)
            except TuiBatchError as exc:
                self._give_up(exc)
                return
            if key is None:
                why = "sampled without a seed"
        if why is not None:
            self.left_out[why] = self.left_out.get(why, 0) + 1
            return
        self.kept += 1
        answer = CachedAnswer(
            result.response_text,
            result.output,
            result.finish_reason,
            result.tokens_input,
            result.tokens_output,
            result.token_counts,
            result.duration,
            self.job.job_id,
            result.reasoning,
            result.reasoning_tokens,
        )
        self._waiting.append((key, self.label, answer))

    def flush(self) -> None:
        """Store the answers kept so far, in one transaction."""
        if not self._waiting or self.broken:
            return
        waiting, self._waiting = self._waiting, []
        try:
            self.cache.put_many(waiting)
        except CacheError as exc:
            self._give_up(exc)

    def close(self) -> None:
        self.cache.close()

    def _give_up(self, exc: TuiBatchError) -> None:
        self.broken = True
        self._waiting = []
        self._warn(f"{exc}{WITHOUT}")


def _not_kept(result: BatchResult, rerun: bool) -> str | None:
    """Why `result` is not kept in the cache (None: it is, if its prompt has a key)."""
    if not result.success:
        return "invalid" if result.invalid else "errors"
    if rerun:
        return "answered after invalid ones, with another seed"
    if result.finish_reason == "length":
        return "cut off by max tokens"
    if result.finish_reason is None:
        return "unfinished"
    if not result.response_text.strip():
        return "empty"
    return None
