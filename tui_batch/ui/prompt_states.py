"""What the progress screen keeps of each prompt of the job it shows, in memory that does
not grow with what each prompt holds: a status in a byte, and the last few thousand
results (older ones are read back from the checkpoint when a row shows them)."""

from __future__ import annotations

from collections import OrderedDict

from tui_batch.core.jobs import BatchResult

STATUSES = ("pending", "running", "retrying", "ok", "invalid", "failed")
_CODE = {name: code for code, name in enumerate(STATUSES)}
# A prompt in one of these has a result, kept or in the checkpoint.
FINISHED = ("ok", "invalid", "failed")
# The results kept in memory: enough for every row a screen shows and the ones just done.
RECENT_RESULTS = 4_096


class PromptStatuses:
    """Each prompt's status (one of STATUSES) in a byte, growing as the job's input is
    read in: ten million prompts hold 10 MB, where a list of their names held 80."""

    def __init__(self, count: int) -> None:
        self._codes = bytearray(count)

    def __len__(self) -> int:
        return len(self._codes)

    def __getitem__(self, index: int) -> str:
        return STATUSES[self._codes[index]] if 0 <= index < len(self._codes) else "pending"

    def __setitem__(self, index: int, status: str) -> None:
        if index >= len(self._codes):
            self._codes.extend(bytes(index + 1 - len(self._codes)))
        self._codes[index] = _CODE[status]


class RecentResults:
    """The last RECENT_RESULTS results recorded, by prompt index."""

    def __init__(self) -> None:
        self._kept: OrderedDict[int, BatchResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, index: object) -> bool:
        return index in self._kept

    def values(self) -> list[BatchResult]:
        """The kept results, oldest first."""
        return list(self._kept.values())

    def get(self, index: int) -> BatchResult | None:
        return self._kept.get(index)

    def put(self, result: BatchResult) -> None:
        self._kept[result.prompt_index] = result
        self._kept.move_to_end(result.prompt_index)
        if len(self._kept) > RECENT_RESULTS:
            self._kept.popitem(last=False)
