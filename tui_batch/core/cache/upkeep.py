"""Keeping the answer cache in bounds: ages and sizes as people type them, and pruning
by age (answers not used for a while) and by size (least recently used first)."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from tui_batch.core.cache.answers import AnswerCache, file_size
from tui_batch.core.errors import SettingsError

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_AMOUNT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
# Past these, a number is a typo (and 400 digits would overflow the arithmetic).
_MAX_AGE = 1000 * 365 * 86400.0
_MAX_SIZE = 2.0**62
# Rounds of "delete the least used, compact, measure" before a size is given up on.
_SIZE_ROUNDS = 8


def parse_age(text: str, label: str = "--older-than") -> float:
    """Seconds from `14d`, `12h`, `30m`, `2w`, `90s`."""
    match = _AMOUNT.fullmatch(text or "")
    if match is None or match.group(2).lower() not in _AGE_UNITS:
        raise SettingsError(
            f"{label}: expected a number and a unit (s, m, h, d or w), like 14d; got {text!r:.40}"
        )
    seconds = float(match.group(1)) * _AGE_UNITS[match.group(2).lower()]
    if not seconds < _MAX_AGE:
        raise SettingsError(f"{label}: {text.strip()[:40]!r} is longer than anything cached")
    return seconds


def parse_size(text: str, label: str = "--max-size") -> int:
    """Bytes from `1GB`, `500MB`, `64KiB`, `2000` (KB, MB, GB are powers of 1000; KiB,
    MiB, GiB powers of 1024)."""
    match = _AMOUNT.fullmatch(text or "")
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise SettingsError(f"{label}: expected a size like 1GB, 500MB or 64KiB; got {text!r:.40}")
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if not size < _MAX_SIZE:
        raise SettingsError(f"{label}: {text.strip()[:40]!r} is larger than any disk")
    return int(size)


def size_text(size: float) -> str:
    """`12.3 MB`, `512 KB`, `180 B` (powers of 1000, as `--max-size` reads them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune did: answers deleted, and the file's size and answers after."""

    deleted: int
    size_before: int
    size_after: int
    answers_left: int


def prune(cache: AnswerCache, older_than: float | None, max_size: int | None) -> Pruned:
    """Delete the answers not used for `older_than` seconds, then the least recently
    used until the file is at most `max_size` bytes; give the space back to the disk."""
    before = file_size(cache.path)
    deleted = 0
    if older_than is not None:
        deleted += cache.delete_unused_since(time.time() - older_than)
    cache.compact()
    if max_size is not None:
        for _ in range(_SIZE_ROUNDS):
            size, count = file_size(cache.path), cache.count()
            if size <= max_size or count == 0:
                break
            excess = math.ceil((size - max_size) / (size / count))
            deleted += cache.delete_least_used(max(1, excess))
            cache.compact()
    return Pruned(deleted, before, file_size(cache.path), cache.count())
