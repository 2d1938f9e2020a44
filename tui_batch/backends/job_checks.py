"""What is checked of a job's servers before it is made, for the command line and the
dashboard alike: each answers and serves the model (and, for a schema or reasoning, in
which form it takes them); the model's name where the spec gives none."""

from __future__ import annotations

from tui_batch.core.errors import SettingsError
from tui_batch.core.jobs import GenerationSettings, JobOptions
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.servers import ServerCheck, ServerSettings
from tui_batch.core.structured.schema import AnswerSchema


def probed_schema(settings: GenerationSettings, options: JobOptions) -> AnswerSchema | None:
    """The schema whose form each server is asked for before a job runs: none for a job
    reading the answer cache (a probe is a generation; the backend asks only if a prompt
    is left to send)."""
    return None if options.cache_reads else settings.schema


def check_spec_servers(spec: RunSpec) -> tuple[ServerCheck, str]:
    """The check of the spec's servers, and the model's name: the spec's, else the one
    model they serve; a one-line error where they cannot be used."""
    from tui_batch.backends.factory import check_servers

    server, model = spec.server, spec.model
    assert server is not None  # a job on servers
    check = check_servers(
        server, model, probed_schema(spec.generation, spec.options), spec.generation
    )
    if model is None:
        names = sorted({name for names in check.models.values() for name in names})
        if len(names) != 1:
            listed = ", ".join(names[:20]) if names else "none listed"
            raise SettingsError(f"--model NAME is required with --server (served: {listed})")
        model = names[0]
        if f"${server.api_key_env}" in model:  # the server's name for it holds the key
            raise SettingsError(
                f"the served model's name holds the API key in ${server.api_key_env}: it is "
                "not used or stored; give --model NAME"
            )
    return check, model


class ServerChecks:
    """Each set of servers checked once for a group's jobs (a check sends requests: a
    matrix of temperatures on one fleet would check it once a variant)."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, ...], tuple[ServerSettings, str]] = {}

    def __call__(self, spec: RunSpec) -> tuple[ServerSettings, str, list[str]]:
        """The spec's servers as the check found them (one that interrupts requests gets
        one at a time), the model's name, and what to warn of (only the first time)."""
        generation = spec.generation
        # What a check depends on: the servers, the model, the schema and reasoning asked.
        key = tuple(
            repr(part)
            for part in (
                spec.server,
                spec.model,
                probed_schema(generation, spec.options),
                generation.reasoning,
                generation.reasoning_effort,
                generation.reasoning_budget,
            )
        )
        if key in self._done:
            return (*self._done[key], [])
        assert spec.server is not None
        check, model = check_spec_servers(spec)
        self._done[key] = (check.applied_to(spec.server), model)
        return (*self._done[key], check.warnings())
