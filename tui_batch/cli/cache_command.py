"""`tui-batch cache stats|clear|prune`: the answer cache's figures and upkeep."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tui_batch.cli.terminal import print_table
from tui_batch.core.cache.answers import AnswerCache, damaged_cache
from tui_batch.core.cache.figures import CacheFigures
from tui_batch.core.cache.upkeep import parse_age, parse_size, prune, size_text
from tui_batch.core.errors import CacheError, SettingsError
from tui_batch.core.paths import cache_path
from tui_batch.core.text import escape_json, one_line


def command_cache(args: argparse.Namespace) -> int:
    path = cache_path()
    if args.cache_command == "prune":
        # Checked before the file is touched: a typo deletes nothing.
        older = parse_age(args.older_than) if args.older_than is not None else None
        size = parse_size(args.max_size) if args.max_size is not None else None
        if older is None and size is None:
            raise SettingsError("cache prune: give --older-than AGE, --max-size SIZE, or both")
    if not path.exists():
        if args.cache_command == "stats" and args.json:
            print(json.dumps({"path": str(path), "answers": 0, "size_bytes": 0}))
        else:
            print(
                f"No answer cache at {one_line(str(path))} yet: a job run with --cache "
                "read-write (or write) makes it."
            )
        return 0
    if args.cache_command == "clear" and args.model is None:
        return _clear_all(path)
    with AnswerCache(path) as cache:
        if args.cache_command == "stats":
            figures = cache.figures()
            if args.json:
                print(escape_json(json.dumps(figures.to_dict(), indent=2, ensure_ascii=False)))
            else:
                _print_figures(figures)
        elif args.cache_command == "clear":
            deleted = cache.delete(args.model)
            cache.compact()
            print(f"Deleted {deleted:,} answers of {one_line(args.model)}; {_left(cache)}")
        else:
            done = prune(cache, older, size)
            print(
                f"Pruned {done.deleted:,} answers: {size_text(done.size_before)} -> "
                f"{size_text(done.size_after)}, {done.answers_left:,} answers left"
            )
    return 0


def _clear_all(path: Path) -> int:
    """Every answer deleted. A file that cannot be opened as a cache is removed whole
    only when its header proves it is a damaged tui-batch cache (the one way to get a
    working cache back); anything else is left as it is, with one line."""
    try:
        with AnswerCache(path) as cache:
            deleted = cache.delete()
            cache.compact()
            print(f"Deleted {deleted:,} answers; {_left(cache)}")
            return 0
    except CacheError as exc:
        if not damaged_cache(path):
            raise CacheError(f"{exc}; nothing was deleted") from None
        for extra in ("", "-wal", "-shm"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
        print(
            f"Removed {one_line(str(path))}, a damaged answer cache ({one_line(str(exc))})",
            file=sys.stderr,
        )
        return 0


def _left(cache: AnswerCache) -> str:
    figures = cache.figures()
    return f"the cache holds {figures.answers:,} answers in {size_text(figures.size_bytes)}"


def _print_figures(figures: CacheFigures) -> None:
    print(f"Answer cache: {one_line(figures.path)}")
    each = f", {figures.bytes_per_answer:,.0f} bytes each" if figures.answers else ""
    print(f"  Size:    {size_text(figures.size_bytes)} ({figures.answers:,} answers{each})")
    print(f"  Served:  {figures.hits:,} times, {figures.tokens_saved:,} tokens saved")
    data = figures.to_dict()
    if figures.answers:
        print(f"  Stored:  {data['oldest']} to {data['newest']}; last used {data['last_used']}")
        rows = [("MODEL", "ANSWERS", "SERVED", "TOKENS SAVED")]
        rows += [
            (m.model, f"{m.answers:,}", f"{m.hits:,}", f"{m.tokens_saved:,}")
            for m in figures.models
        ]
        print_table(rows)
