"""Where a remote job sends its requests, and how hard: endpoints, key variable, limits.

A job stores the name of the environment variable that holds the API key, never the
key itself; the key is read from the environment when requests are sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tui_batch.core.errors import SettingsError
from tui_batch.core.setting_table import BATCH_KEYS, BY_NAME, SETTINGS
from tui_batch.core.settings import LIMITS, Prices, check, number_value, parse_number, parse_switch

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# Longest pause a server's Retry-After may ask of an endpoint.
MAX_RETRY_AFTER = 120.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server's base URL (ending in /v1, say) and its own cap on requests in flight
    (`None`: the job's overall concurrency)."""

    url: str
    concurrency: int | None = None

    def __str__(self) -> str:
        return f"{self.url}#{self.concurrency}" if self.concurrency else self.url


def parse_endpoint(text: str) -> Endpoint:
    """`http://host:8000/v1` or `http://host:8000/v1#8` (at most 8 in flight there).

    A URL with no path gets `/v1`, where every OpenAI-compatible server serves.
    A URL with a user name or password in it is refused: the key belongs in a variable.
    """
    if not isinstance(text, str) or not text.strip():
        raise SettingsError("Server: a URL is required, like http://127.0.0.1:8000/v1")
    raw = text.strip()
    if _holds_credentials(raw):  # first: no message below may quote a password
        raise SettingsError(
            "Server: a URL must not hold a user name or password; put the key in an "
            "environment variable and give its name (--api-key-env, or API key variable in "
            "job setup)"
        )
    base, hash_, cap_text = raw.partition("#")
    concurrency = None
    if hash_:
        try:
            concurrency = parse_number("concurrency", cap_text)
        except SettingsError as exc:
            raise SettingsError(f"Server {base:.80}: after '#', {exc}") from None
        if concurrency is None:
            raise SettingsError(f"Server {base:.80}: expected a number after '#', like {base}#8")
    try:
        parts = urlsplit(base)
        port = parts.port
    except ValueError as exc:
        raise SettingsError(f"Server {base!r:.80}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        example = "http://127.0.0.1:8000/v1"
        if "://" not in base:
            example = f"http://{base}" + ("" if "/" in base else "/v1")
        raise SettingsError(
            f"Server {base!r:.80}: expected a URL starting with http:// or https://, "
            f"like {example:.80}"
        )
    if parts.query:
        raise SettingsError(f"Server {parts.hostname}: a URL with a query string is not supported")
    path = parts.path.rstrip("/") or "/v1"
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if ":" in (parts.hostname or "") and port is None:
        netloc = f"[{parts.hostname}]"
    elif ":" in (parts.hostname or ""):
        netloc = f"[{parts.hostname}]:{port}"
    return Endpoint(urlunsplit((parts.scheme, netloc, path, "", "")), concurrency)


def _holds_credentials(url: str) -> bool:
    """Whether `url` (well formed or not, with or without a scheme) has a user or a
    password before its host: `user:secret@host`."""
    rest = url.split("://", 1)[1] if "://" in url else url
    authority = re.split(r"[/?]", rest, maxsplit=1)[0]
    return "@" in authority


def check_key_env(name: Any) -> str:
    """The name of the variable holding the API key. Never echoes a bad value: it may be
    the key itself, typed in the wrong place."""
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name.strip()):
        raise SettingsError(
            "API key variable: expected the name of an environment variable "
            f"(letters, digits and _, like {DEFAULT_KEY_ENV}), not the key itself"
        )
    return name.strip()


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How a job talks to OpenAI-compatible servers. Checked when made."""

    endpoints: tuple[Endpoint, ...]
    api_key_env: str = DEFAULT_KEY_ENV
    concurrency: int = 16
    rpm: int | None = None
    tpm: int | None = None
    connect_timeout: float = 10.0
    first_token_timeout: float = 300.0
    stall_timeout: float = 60.0
    request_timeout: float = 900.0
    # While every server is unreachable, requests wait; past this many seconds the job
    # stops, resumable (0: wait for ever).
    give_up_after: float = 900.0
    stream: bool = True
    # Through the provider's Batch API (`/files` + `/batches`) instead of live requests.
    batch_api: bool = False
    batch_max_lines: int = 50_000
    batch_max_mb: float = 200.0
    batch_files: int = 2
    batch_poll: float = 30.0
    batch_poll_most: float = 300.0
    batch_keep_files: bool = False
    batch_discount: float = 0.5

    def __post_init__(self) -> None:
        endpoints = tuple(self.endpoints)
        if not endpoints:
            raise SettingsError("Server: at least one endpoint URL is required")
        if not all(isinstance(e, Endpoint) for e in endpoints):
            raise SettingsError("Server: endpoints must be Endpoint values")
        urls = [e.url for e in endpoints]
        for url in urls:
            if urls.count(url) > 1:
                raise SettingsError(f"Server {url} is given twice")
        if self.batch_api is True and len(urls) > 1:
            raise SettingsError(
                f"Batch API: one server takes a job's batches, not {len(urls)} (give one --server)"
            )
        object.__setattr__(self, "endpoints", endpoints)
        object.__setattr__(self, "api_key_env", check_key_env(self.api_key_env))
        for f in fields(self):
            if f.name in _NUMBERS:
                object.__setattr__(self, f.name, check(f.name, getattr(self, f.name)))
        for name in _SWITCHES:
            if not isinstance(getattr(self, name), bool):
                label = BY_NAME[name].label
                raise SettingsError(
                    f"{label}: expected true or false, got {getattr(self, name)!r:.40}"
                )
        if self.first_token_timeout > self.request_timeout:
            raise SettingsError(
                f"First token timeout ({self.first_token_timeout:g}s) is longer than the "
                f"request timeout ({self.request_timeout:g}s)"
            )

    def priced(self, prices: Prices | None) -> Prices | None:
        """`prices` as a job on these servers pays them: a Batch API's discount taken."""
        if prices is None or not self.batch_api:
            return prices
        return replace(prices, discount=self.batch_discount)

    def cap(self, endpoint: Endpoint) -> int:
        """The most requests in flight at one endpoint."""
        return min(endpoint.concurrency or self.concurrency, self.concurrency)

    def with_endpoints(self, endpoints: tuple[Endpoint, ...]) -> ServerSettings:
        return replace(self, endpoints=endpoints)

    def to_dict(self) -> dict[str, Any]:
        # Not `asdict`: a job's header, with these in it, is written at every checkpoint.
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["endpoints"] = [str(e) for e in self.endpoints]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerSettings:
        if not isinstance(data, Mapping):
            raise SettingsError(f"Server settings: expected an object, got {type(data).__name__}")
        endpoints = data.get("endpoints")
        if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
            raise SettingsError("Server settings: endpoints are not a list of URLs")
        known = {f.name for f in fields(cls)} - {"endpoints"}
        values = {k: v for k, v in data.items() if k in known}
        return cls(endpoints=tuple(parse_endpoint(e) for e in endpoints), **values)


# Every setting of the servers besides their URLs: the [server] table's and the Batch API's.
SERVER_KEYS = (
    *(s.name for s in SETTINGS if s.table == "server" and s.name != "server"),
    *BATCH_KEYS,
)


_FIELD_NAMES = tuple(f.name for f in fields(ServerSettings))


def paid(prices: Prices | None, server: ServerSettings | None) -> Prices | None:
    """What a job pays at `prices`: a job through a Batch API, its discount taken."""
    return server.priced(prices) if server is not None else prices


_NUMBERS = tuple(key for key in SERVER_KEYS if BY_NAME[key].is_number)
_SWITCHES = tuple(key for key in SERVER_KEYS if BY_NAME[key].kind == "bool")
# What each server setting is unless told (for help texts and empty fields).
SERVER_DEFAULTS = {f.name: f.default for f in fields(ServerSettings) if f.default is not MISSING}


def server_settings_from_text(
    urls: list[str], given: Mapping[str, Any], base: ServerSettings | None = None
) -> ServerSettings:
    """Server settings from what flags, setup fields or a job file give: text (numbers
    as typed) or values of their type. `urls` empty keeps `base`'s endpoints; a key left
    out keeps `base`'s value (or the default)."""
    endpoints = tuple(parse_endpoint(u) for u in urls)
    if base is None:
        if not endpoints:
            raise SettingsError("Server: at least one endpoint URL is required")
        base = ServerSettings(endpoints=endpoints)
    values: dict[str, Any] = {}
    for key, text in given.items():
        if key == "api_key_env":
            values[key] = check_key_env(text) if text is not None else base.api_key_env
        elif key in _SWITCHES:
            values[key] = parse_switch(key, text)
        elif key in _NUMBERS:
            if isinstance(text, str) and not text.strip() and not LIMITS[key].blank_is_none:
                continue
            values[key] = number_value(key, text)
        else:
            raise SettingsError(f"Unknown server setting {key!r}")
    return replace(base, endpoints=endpoints or base.endpoints, **values)


# A server that refuses every structured-output form (an error for each): sent none.
REFUSES_SCHEMAS = "refused"


@dataclass(slots=True)
class ServerCheck:
    """What asking each server before a job said: the models each serves (none listed:
    it does not say), and the servers that cut a streaming answer off whenever another
    request comes (llama-cpp-python's server with `interrupt_requests` on, its default)."""

    models: dict[str, list[str]]
    interrupting: list[str] = field(default_factory=list)
    # With a schema: how each server enforces it (one of `chat_wire.SCHEMA_FORMS`); None
    # where it answers without enforcing one, REFUSES_SCHEMAS where it refuses them.
    schema_forms: dict[str, str | None] = field(default_factory=dict)
    # With reasoning settings to send: what each server said of them, in words.
    reasoning: dict[str, str] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        said = [
            f"{url} interrupts requests: each new request cuts off the answer it is "
            "streaming (llama-cpp-python's server, whose interrupt_requests is on unless "
            "told). tui-batch sends it one request at a time; for batches, start it with "
            "--interrupt_requests False"
            for url in self.interrupting
        ]
        said += [
            f"{url} answers but does not enforce the schema: its answers are checked, and "
            "invalid ones run again"
            for url, form in self.schema_forms.items()
            if form in (None, REFUSES_SCHEMAS)
        ]
        said += [f"{url}: {note}" for url, note in self.reasoning.items()]
        return said

    def enforced_form(self, url: str) -> str | None:
        """The form in which the server at `url` enforces a schema (None: it does not)."""
        form = self.schema_forms.get(url)
        return None if form == REFUSES_SCHEMAS else form

    def applied_to(self, server: ServerSettings) -> ServerSettings:
        """`server` with each interrupting endpoint capped at one request in flight."""
        if not self.interrupting:
            return server
        capped = tuple(
            Endpoint(e.url, 1) if e.url in self.interrupting else e for e in server.endpoints
        )
        return server.with_endpoints(capped)
