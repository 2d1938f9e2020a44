"""JSON from outside, read as strictly as JSON is written.

Python's `json` reads more than JSON: `NaN`, `Infinity`, `-Infinity`, `1e400` (which
becomes infinity) and lone surrogates (`"\\ud800"`, which no UTF-8 file can hold). Taken
in, they break what tui-batch writes afterwards: a checkpoint that reads back as damaged,
an export that is not JSON, a job stopped by an encoding error. Everything parsed from
outside (answers, data files, a prompts file's records, cache entries) goes through
`parse_json`, and every value that came another way (a TOML table, a record from
Parquet) through `clean_value`:

- a number that is not finite is refused (`JsonValueError`, one line);
- an integer too long for Python to read (over 4,300 digits) is refused;
- a lone surrogate, in a string or a key, becomes U+FFFD, as a UTF-8 decoder makes it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from tui_batch.core.text import clean_text, has_surrogates

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class JsonValueError(ValueError):
    """A JSON text holds a value JSON cannot: NaN, an infinite or too long number."""


def _constant(name: str) -> Any:
    raise JsonValueError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonValueError(f"{_cut(text)} is past the range of a number (about 1e308)")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # over sys.get_int_max_str_digits()
        raise JsonValueError(f"an integer of {len(text):,} digits is too long") from None


def _cut(text: str) -> str:
    return text if len(text) <= 24 else text[:21] + "..."


# JSON's numbers only (a JsonValueError for others); strings as they are.
STRICT_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float, parse_int=_int)


def parse_json(text: str) -> Any:
    """`text` as JSON, strictly: a `json.JSONDecodeError` where it is not JSON, a
    `JsonValueError` for a value JSON cannot hold, RecursionError when nested past
    Python's stack; lone surrogates made U+FFFD."""
    value = STRICT_DECODER.decode(text)
    return clean_value(value) if _may_hold_surrogates(text) else value


def raw_decode(text: str, position: int) -> tuple[Any, int]:
    """`parse_json` of the JSON value starting at `position`, and where it ends."""
    value, end = STRICT_DECODER.raw_decode(text, position)
    return (clean_value(value) if _may_hold_surrogates(text[position:end]) else value), end


def _may_hold_surrogates(text: str) -> bool:
    return _SURROGATE_ESCAPE.search(text) is not None or has_surrogates(text)


def clean_value(value: Any) -> Any:
    """`value` (made of dicts, lists, strings, numbers, booleans and None) as JSON can
    hold it: lone surrogates made U+FFFD; a JsonValueError for a number that is not
    finite."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise JsonValueError(f"{value} is not a JSON number")
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    return value
