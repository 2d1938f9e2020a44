"""Regular expressions that come with the data, matched with a bound on their time.

A pattern from an expected column (`--score regex`) or a schema's `pattern` is the
user's, and the text it runs on is a model's: Python's `re` backtracks, and `^(a|aa)+$`
against `aaa...ab` would hold a job (and Ctrl+C, and the job's lock) for ever. These are
compiled by the `regex` package, which reads `re`'s syntax and stops a match after
`MATCH_SECONDS`; a pattern it cannot compile, for whatever reason (a syntax error, a
repeat count too big, groups nested past Python's stack), is a `RegexProblem` with one
line that says why.
"""

from __future__ import annotations

from functools import lru_cache

import regex

# How long one match may take. A sane pattern on an answer takes microseconds; one that
# needs longer is backtracking without end, and its answer is scored wrong (or invalid)
# with the reason instead of holding the job.
MATCH_SECONDS = 0.5
MAX_PATTERN = 10_000


class RegexProblem(ValueError):
    """A pattern that cannot be compiled, or a match that ran out of time; one line."""


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """`pattern` compiled (remembered), or a RegexProblem saying why it cannot be."""
    if len(pattern) > MAX_PATTERN:
        raise RegexProblem(f"longer than {MAX_PATTERN:,} characters")
    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise RegexProblem(str(exc)) from None
    except RecursionError:
        raise RegexProblem("nested too deeply to compile") from None
    except (OverflowError, ValueError, MemoryError, TypeError) as exc:
        raise RegexProblem(str(exc) or type(exc).__name__) from None


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be used (None: it can)."""
    try:
        compile_pattern(pattern)
    except RegexProblem as exc:
        return str(exc)
    return None


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` matches somewhere in `text`; a RegexProblem when the pattern
    cannot be compiled or the match takes longer than `MATCH_SECONDS`."""
    compiled = compile_pattern(pattern)
    try:
        return compiled.search(text, timeout=MATCH_SECONDS) is not None
    except TimeoutError:
        raise RegexProblem(
            f"matching took longer than {MATCH_SECONDS:g} s (a pattern that backtracks)"
        ) from None
    except RecursionError:
        raise RegexProblem("the match nested too deeply") from None
