"""What each endpoint of a fleet takes, asked once, when the first job that needs it
begins: the form a schema is sent in (`server_probe.schema_form`) and which of a job's
reasoning fields it accepts (`reasoning_probe`). Every endpoint not asked yet is asked
at once, on the backend's loop, for at most PROBE_WAIT; one that does not answer in time
gets the schema checked only and the reasoning fields as they were asked."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any

from tui_batch.backends.remote.chat_wire import SCHEMA_FORMS
from tui_batch.backends.remote.openai_api import Secret
from tui_batch.backends.remote.reasoning_probe import reasoning_fields_taken
from tui_batch.backends.remote.server_probe import schema_form

# The longest the probes of a job's servers may take.
PROBE_WAIT = 60.0


class EndpointProbes:
    """The answers of a backend's endpoints, kept for every job it runs."""

    def __init__(self, model: str, secret: Secret) -> None:
        self.model, self.secret = model, secret
        # How each endpoint enforces a schema (`chat_wire.SCHEMA_FORMS`; None: it does not).
        self.schema_forms: dict[str, str | None] = {}
        # The reasoning fields each endpoint takes, by the fields a job asked for.
        self.reasoning_taken: dict[tuple[str, str], dict[str, Any]] = {}

    def find_schema_forms(
        self,
        loop: asyncio.AbstractEventLoop,
        clients: dict[str, Any],
        urls: list[str],
        note: Callable[[str], None],
    ) -> str | None:
        """Ask the endpoints at `urls` not asked yet how they enforce a schema, `note`
        each one's answer, and return how the job's answers are kept to it (None:
        checked only)."""
        unknown = [url for url in urls if url not in self.schema_forms]
        found = _gather(loop, [schema_form(clients[url], self.model) for url in unknown])
        for url, form in zip(unknown, found, strict=True):
            self.schema_forms[url] = form if isinstance(form, str) else None
        forms = [self.schema_forms.get(url) for url in urls]
        enforcing = [form for form in forms if form in SCHEMA_FORMS]
        for url, form in zip(urls, forms, strict=True):
            note(
                f"{url}: schema sent as {form}"
                if form in SCHEMA_FORMS
                else f"{url} does not enforce the schema: answers are checked, and invalid "
                "ones run again"
            )
        if not enforcing:
            return None
        mode = f"enforced by the servers ({', '.join(sorted(set(enforcing)))})"
        if len(enforcing) < len(forms):
            mode += f"; {len(forms) - len(enforcing)} do not: checked only"
        return mode

    def find_reasoning_fields(
        self,
        loop: asyncio.AbstractEventLoop,
        clients: dict[str, Any],
        urls: list[str],
        fields: dict[str, Any],
        note: Callable[[str], None],
    ) -> None:
        """Ask the endpoints at `urls` not asked yet which of `fields` they take, and
        `note` what each said."""
        asked = _key(fields)
        unknown = [url for url in urls if (url, asked) not in self.reasoning_taken]
        found = _gather(
            loop,
            [
                reasoning_fields_taken(clients[url], self.model, fields, self.secret)
                for url in unknown
            ],
        )
        for url, outcome in zip(unknown, found, strict=True):
            if isinstance(outcome, BaseException):
                outcome = (fields, "reasoning fields sent as asked; the probe could not tell")
            taken, said = outcome
            self.reasoning_taken[(url, asked)] = taken
            note(f"{url}: {said}")

    def reasoning_for(self, url: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The `fields` the endpoint at `url` takes (all of them where it was not asked)."""
        return self.reasoning_taken.get((url, _key(fields)), fields)


def _key(fields: dict[str, Any]) -> str:
    return repr(sorted(fields.items()))


def _gather(loop: asyncio.AbstractEventLoop, asks: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Each of `asks` run at once on `loop`, waited for at most PROBE_WAIT: its answer,
    or the exception it raised (a TimeoutError for all when the wait ran out)."""
    if not asks:
        return []

    async def every() -> list[Any]:
        return await asyncio.gather(*asks, return_exceptions=True)

    future = asyncio.run_coroutine_threadsafe(every(), loop)
    try:
        return future.result(timeout=PROBE_WAIT)
    except concurrent.futures.TimeoutError:
        future.cancel()
        return [TimeoutError()] * len(asks)
