"""Which records of an input a job runs: the first N (`--limit`), a range of them
(`--range A:B`), a reproducible random sample (`--sample N`, seeded by `--seed`), and
one shard of N (`--shard I/N`, or `auto` from the launcher's environment).

Records are numbered from 1 as the input file gives them (a line of a prompts file, a
record of a data file), before empty ones are skipped, so a slice names the same records
however the file is later filtered. A shard takes every record whose number is I modulo
N: stable, needing no count of the file, and the shards of one job together are the
whole job, each record in exactly one. The sample is drawn in one pass (reservoir
sampling, Algorithm L) and run in the file's order.

A job read in from a large input keeps where its reading stands (`Reading`) until all
of it is in.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

from tui_batch.core.errors import CheckpointError, SettingsError

T = TypeVar("T")

# The launchers' environment for `--shard auto`: the index (0-based) and the count.
SHARD_ENVIRONMENTS = (
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"),
    ("JOB_COMPLETION_INDEX", "TUI_BATCH_SHARDS"),
    ("SKYPILOT_JOB_RANK", "SKYPILOT_NUM_JOBS"),
)
# Slurm numbers an array's tasks from SLURM_ARRAY_TASK_MIN (often 1): counted from it.
_SLURM_MIN = "SLURM_ARRAY_TASK_MIN"
MAX_RECORD = 2**62
_RANGE = re.compile(r"\s*(\d*)\s*:\s*(\d*)\s*")
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True, slots=True)
class InputSlice:
    """The records a job takes of its input. `start`/`stop` are record numbers (1-based,
    `stop` inclusive; None: open), `limit` keeps the first N taken, `sample` draws N of
    those at random with `seed`, `shard` is (I, N) with I from 1."""

    start: int | None = None
    stop: int | None = None
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    shard: tuple[int, int] | None = None
    # The shard was taken from the launcher's environment (`--shard auto`): a job file
    # keeps `auto`, to be read again by each task.
    auto: bool = False

    @property
    def whole(self) -> bool:
        return self == InputSlice(seed=self.seed)

    def takes(self, number: int) -> bool:
        """Whether record `number` is in the range and the shard (limit and sample aside)."""
        if self.start is not None and number < self.start:
            return False
        if self.stop is not None and number > self.stop:
            return False
        return self.shard is None or (number - 1) % self.shard[1] == self.shard[0] - 1

    def past_end(self, number: int) -> bool:
        """No record from `number` on can be taken: reading may stop."""
        return self.stop is not None and number > self.stop

    def select(self, records: Iterable[tuple[int, T]]) -> Iterator[tuple[int, T]]:
        """The numbered records this slice takes, in order."""
        taken = iter(records)
        if self.stop is not None:
            taken = _until(taken, self)
        if self.start is not None or self.shard is not None:
            taken = (item for item in taken if self.takes(item[0]))
        if self.sample is not None:
            taken = iter(reservoir(taken, self.sample, self.seed))
        if self.limit is not None:
            taken = _first(taken, self.limit)
        return taken

    def describe(self) -> str:
        """`records 10-20, shard 2/4, first 100`, as listings show it ('' when whole)."""
        parts = []
        if self.start is not None or self.stop is not None:
            parts.append(f"records {self.start or 1}-{'' if self.stop is None else self.stop}")
        if self.shard is not None:
            parts.append(
                f"shard {self.shard[0]}/{self.shard[1]}" + (" (auto)" if self.auto else "")
            )
        if self.sample is not None:
            parts.append(f"sample {self.sample:,} (seed {self.seed})")
        if self.limit is not None:
            parts.append(f"first {self.limit:,}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "stop": self.stop,
            "limit": self.limit,
            "sample": self.sample,
            "seed": self.seed,
            "shard": list(self.shard) if self.shard else None,
            "auto": self.auto,
        }

    @classmethod
    def from_dict(cls, data: Any) -> InputSlice:
        """A slice as `to_dict` wrote it; a SettingsError for anything else."""
        if not isinstance(data, dict):
            raise SettingsError("the job's slice is not an object")
        values = {key: data.get(key) for key in ("start", "stop", "limit", "sample")}
        for key, value in values.items():
            if value is not None and not _whole(value, 1):
                raise SettingsError(f"the job's slice: {key} is {value!r:.40}")
        seed = data.get("seed") or 0
        if not _whole(seed, 0):
            raise SettingsError(f"the job's slice: seed is {seed!r:.40}")
        shard = data.get("shard")
        if shard is not None:
            if not (
                isinstance(shard, list)
                and len(shard) == 2
                and all(_whole(v, 1) for v in shard)
                and shard[0] <= shard[1]
            ):
                raise SettingsError(f"the job's slice: shard is {shard!r:.40}")
            shard = (shard[0], shard[1])
        return cls(**values, seed=seed, shard=shard, auto=data.get("auto") is True)


def _whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= MAX_RECORD


def _until(records: Iterable[tuple[int, T]], chosen: InputSlice) -> Iterator[tuple[int, T]]:
    """The records up to the range's end, without reading one past it."""
    for item in records:
        if chosen.past_end(item[0]):
            return
        yield item
        if chosen.stop is not None and item[0] >= chosen.stop:
            return


def _first(items: Iterator[T], count: int) -> Iterator[T]:
    """The first `count` items, without taking one more."""
    if count <= 0:
        return
    for taken, item in enumerate(items, start=1):
        yield item
        if taken >= count:
            return


def reservoir(items: Iterable[tuple[int, T]], size: int, seed: int) -> list[tuple[int, T]]:
    """`size` of `items` drawn uniformly at random in one pass (Algorithm L: the draws
    between keeps are skipped, not made), returned in their order; the same for the
    same seed and items."""
    rng = random.Random(seed)
    kept: list[tuple[int, T]] = []
    iterator = iter(items)
    for item in iterator:
        kept.append(item)
        if len(kept) == size:
            break
    if len(kept) < size:
        return kept
    weight = math.exp(math.log(rng.random() or 1e-300) / size)
    while True:
        skip = math.floor(math.log(rng.random() or 1e-300) / math.log(1 - weight or 1e-300))
        # Passed over without a look: the item after `skip` others, or the end.
        item = next(islice(iterator, skip, None), _END)
        if item is _END:
            return sorted(kept, key=lambda pair: pair[0])
        kept[rng.randrange(size)] = item
        weight *= math.exp(math.log(rng.random() or 1e-300) / size)


_END: Any = object()


def parse_range(text: str) -> tuple[int | None, int | None]:
    """`A:B` (records A to B, 1-based, inclusive; either side may be left out)."""
    match = _RANGE.fullmatch(text or "")
    if not match or not (match[1] or match[2]) or len(text) > 60:
        raise SettingsError(
            f"Range (--range): expected A:B, the records from A to B (1-based; 10:, :500), "
            f"got {text!r:.40}"
        )
    start = int(match[1]) if match[1] else None
    stop = int(match[2]) if match[2] else None
    if start is not None and not 1 <= start <= MAX_RECORD:
        raise SettingsError("Range (--range): records are numbered from 1")
    if stop is not None and not 1 <= stop <= MAX_RECORD:
        raise SettingsError("Range (--range): records are numbered from 1")
    if start is not None and stop is not None and stop < start:
        raise SettingsError(f"Range (--range): {start}:{stop} is empty (B before A)")
    return start, stop


def parse_shard(text: str, environ: dict[str, str] | None = None) -> tuple[int, int]:
    """`I/N` (shard I of N, from 1), or `auto`: from a Slurm array, a Kubernetes indexed
    job (with TUI_BATCH_SHARDS) or SkyPilot, whichever environment is set."""
    if text.strip().lower() == "auto":
        return shard_from_environment(os.environ if environ is None else environ)
    match = _SHARD.fullmatch(text or "")
    if not match or len(text) > 60:
        raise SettingsError(f"Shard (--shard): expected I/N (2/8) or auto, got {text!r:.40}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= count <= 1_000_000:
        raise SettingsError(f"Shard (--shard): {count} shards: expected 1 to 1,000,000")
    if not 1 <= index <= count:
        raise SettingsError(f"Shard (--shard): shard {index} of {count}: I runs from 1 to N")
    return index, count


def shard_from_environment(environ: Any) -> tuple[int, int]:
    for index_name, count_name in SHARD_ENVIRONMENTS:
        if index_name not in environ:
            continue
        index_text, count_text = environ.get(index_name, ""), environ.get(count_name, "")
        if not count_text:
            raise SettingsError(
                f"Shard (--shard auto): {index_name} is set but {count_name} is not: "
                "it gives the number of shards"
            )
        try:
            index, count = int(index_text), int(count_text)
            if index_name == "SLURM_ARRAY_TASK_ID":
                index -= int(environ.get(_SLURM_MIN, "0") or 0)
        except ValueError:
            raise SettingsError(
                f"Shard (--shard auto): {index_name}={index_text!r:.20} and "
                f"{count_name}={count_text!r:.20} are not whole numbers"
            ) from None
        if not 0 <= index < count:
            raise SettingsError(
                f"Shard (--shard auto): {index_name} gives shard {index} of {count} "
                "(counted from 0)"
            )
        return index + 1, count
    names = ", ".join(name for name, _ in SHARD_ENVIRONMENTS)
    raise SettingsError(f"Shard (--shard auto): none of {names} is set; give --shard I/N")


@dataclass(frozen=True, slots=True)
class Reading:
    """Where reading a job's input stands while it is not all in: the number of the
    last record read in (`slices`' numbering), and the input file's SHA-256 when the
    reading began (a resume reads on only from the same file)."""

    position: int
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Any) -> Reading:
        if not isinstance(data, dict):
            raise CheckpointError("job record: reading is not an object")
        position, sha256 = data.get("position"), data.get("sha256")
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise CheckpointError(f"job record: reading position {position!r:.40}")
        if sha256 is not None and not isinstance(sha256, str):
            raise CheckpointError("job record: reading sha256 is not text")
        return cls(position, sha256)
