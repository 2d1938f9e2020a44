"""Bounds on filling a template from a record: what one render may build and how long it
may take, so a hostile or mistaken template is "record N cannot be rendered", never a
hung process or a machine out of memory.

- `BoundedSandbox`: Jinja2's immutable sandbox, with `*` and `**` checked before they
  run (`'x' * 10**10`, `10 ** 10 ** 10` would otherwise be computed, and Jinja folds
  constant expressions when it compiles, so even compiling them would hang).
- `render_bounded`: the output of one render, cut off past MAX_RENDERED characters.
- `deadline`: a render that runs longer than RENDER_SECONDS (a loop of 10^5 x 10^5
  steps) is stopped by a watchdog thread, which raises `RenderTimeout` in the rendering
  thread at its next bytecode.
"""

from __future__ import annotations

import ctypes
import math
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from jinja2 import pass_context
from jinja2.filters import do_format as _FORMAT_FILTER
from jinja2.sandbox import ImmutableSandboxedEnvironment

# One record's prompt: longer than any model's context, far short of a machine's memory.
MAX_RENDERED = 32 * 2**20
# One record's render (they take microseconds).
RENDER_SECONDS = 5.0
# `a ** b` may make an integer of at most this many bits.
MAX_POWER_BITS = 1 << 16
_WATCH_EVERY = 0.1


class RenderLimit(Exception):
    """A render would build more than the bounds allow; the message says what."""


class RenderTimeout(BaseException):
    """Raised into a rendering thread by the watchdog. A BaseException, so that no
    `except Exception` inside a template's filters swallows it."""


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox; `*` and `**`, calls and filters are checked before they
    build a value (a width or a count past MAX_RENDERED is refused), and filters are
    never run while compiling (Jinja folds constant ones: `"a"|center(9999999999)`)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {name: _bounded_filter(f) for name, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%":
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_sizes(args, kwargs)  # `"x".ljust(10**10)`
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(value.__self__)  # `"{:>9999999999}".format(1)`
        return wrapped


def _check_sizes(args: Any, kwargs: Any) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_RENDERED:
            raise RenderLimit(f"an argument of {value:,} is too big")


# A width or precision of nine digits or more in a format: `%999999999d`, `{:>999999999}`.
_WIDE_FORMAT = re.compile(r"%[-+ #0]*\d*\.?\d{9,}|\{[^{}]*:[^{}]*?\d{9,}[^{}]*\}")


def _check_format(value: Any) -> None:
    if isinstance(value, str) and _WIDE_FORMAT.search(value):
        raise RenderLimit("a format asks for a width or precision too big")


def _bounded_filter(function: Any) -> Any:
    """`function` as a filter that checks its arguments first and takes the context,
    which is what keeps Jinja from running it while compiling."""
    passes = getattr(getattr(function, "jinja_pass_arg", None), "name", None)
    formats = function is _FORMAT_FILTER  # its input is a format: `"%9999999999d"|format(1)`

    @pass_context
    def bounded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_sizes(args, kwargs)
        if formats:
            _check_format(value)
        if passes == "context":
            return function(context, value, *args, **kwargs)
        if passes == "eval_context":
            return function(context.eval_ctx, value, *args, **kwargs)
        if passes == "environment":
            return function(context.environment, value, *args, **kwargs)
        return function(value, *args, **kwargs)

    return bounded


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(sequence, (str, bytes, list, tuple)) and isinstance(times, int):
        size = len(sequence) * max(0, times)
        if size > MAX_RENDERED:
            raise RenderLimit(f"repeating a value {times:,} times makes {size:,} items")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        bits = exponent * math.log2(abs(base))
        if bits > MAX_POWER_BITS:
            raise RenderLimit(f"{base} ** {exponent} is a number of {bits:,.0f} bits")


def render_bounded(template: Any, record: Mapping[str, Any]) -> str:
    """`template` filled from `record`, a RenderLimit past MAX_RENDERED characters."""
    parts: list[str] = []
    size = 0
    for part in template.generate(record):
        size += len(part)
        if size > MAX_RENDERED:
            raise RenderLimit(f"the prompt is over {MAX_RENDERED:,} characters")
        parts.append(part)
    return "".join(parts)


# Renders under way: thread id -> [when it began, whether the watchdog fired at it].
_running: dict[int, list[Any]] = {}
_lock = threading.Lock()
_watchdog: threading.Thread | None = None
_raise_in = ctypes.pythonapi.PyThreadState_SetAsyncExc
_raise_in.argtypes = (ctypes.c_ulong, ctypes.py_object)


class _Deadline:
    """The block (one render) runs at most RENDER_SECONDS; past that, `RenderTimeout`
    is raised inside it (or, rarely, just after it: callers catch it around the block).
    A class, not a generator: it is entered once per record, a million times a file."""

    __slots__ = ()

    def __enter__(self) -> None:
        with _lock:
            _running[threading.get_ident()] = [time.monotonic(), False]
            if _watchdog is None:
                _start_watchdog()

    def __exit__(self, *exc_info: object) -> None:
        thread = threading.get_ident()
        with _lock:
            fired = _running.pop(thread, (0, False))[1]
        if fired:  # raised but perhaps not yet delivered: take it back
            _raise_in(thread, ctypes.py_object())


_DEADLINE = _Deadline()


def deadline() -> _Deadline:
    """A context for one render, bounded in time (see `_Deadline`)."""
    return _DEADLINE


def _start_watchdog() -> None:
    global _watchdog
    _watchdog = threading.Thread(target=_watch, name="tui-batch-render-watchdog", daemon=True)
    _watchdog.start()


def _watch() -> None:
    while True:
        time.sleep(_WATCH_EVERY)
        now = time.monotonic()
        with _lock:
            for thread, state in _running.items():
                if not state[1] and now - state[0] > RENDER_SECONDS:
                    state[1] = True
                    _raise_in(thread, ctypes.py_object(RenderTimeout))
