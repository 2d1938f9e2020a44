"""What `tui-batch cache stats` shows of the answer cache: its size and answers, how
often they were served, and the same per model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelShare:
    """One model's part of the cache: its answers, and how often they were served."""

    model: str
    answers: int
    hits: int
    tokens_saved: int


@dataclass(frozen=True, slots=True)
class CacheFigures:
    """What `tui-batch cache stats` shows."""

    path: str
    size_bytes: int
    answers: int
    hits: int
    tokens_saved: int
    oldest: float | None
    newest: float | None
    last_used: float | None
    models: tuple[ModelShare, ...]

    @property
    def bytes_per_answer(self) -> float:
        return self.size_bytes / self.answers if self.answers else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "answers": self.answers,
            "bytes_per_answer": round(self.bytes_per_answer, 1),
            "hits": self.hits,
            "tokens_saved": self.tokens_saved,
            "oldest": _date(self.oldest),
            "newest": _date(self.newest),
            "last_used": _date(self.last_used),
            "models": [
                {
                    "model": m.model,
                    "answers": m.answers,
                    "hits": m.hits,
                    "tokens_saved": m.tokens_saved,
                }
                for m in self.models
            ],
        }


def _date(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
