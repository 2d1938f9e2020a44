"""Several jobs' lines on one stderr: on a terminal each job's progress line kept at the
bottom and redrawn in place, everything else above; in a log, every line after its
job's name."""

from __future__ import annotations

import io
import re

from tui_batch.cli.progress_board import ProgressBoard
from tui_batch.cli.terminal import ProgressPrinter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(output: str) -> list[str]:
    """What a terminal shows after `output`: lines, `\\r\\x1b[K` and the board's
    `\\x1b[NF\\x1b[J` (up N lines, clear to the end) played out."""
    lines, row = [""], 0
    for token in re.split(r"(\x1b\[\d+F\x1b\[J|\r\x1b\[K|\n)", output):
        if token == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif token == "\r\x1b[K":
            lines[row] = ""
        elif token.startswith("\x1b["):
            row -= int(token[2 : token.index("F")])
            del lines[row:]
            lines.append("")
        else:
            lines[row] += token
    return [line for line in lines if line]


def test_on_a_terminal_each_jobs_line_stays_at_the_bottom():
    out = Terminal()
    board = ProgressBoard(out)
    first, second = board.stream_for("t=0"), board.stream_for("t=0.7")
    print("Job 1: 4 prompts", file=first)
    print("Job 2: 4 prompts", file=second)
    first.write("\r\x1b[KProgress: 25% (1/4)")
    second.write("\r\x1b[KProgress: 50% (2/4)")
    first.write("\r\x1b[KProgress: 50% (2/4)")
    print("\nCtrl+C: stopping", file=board.group_stream(), flush=True)
    assert screen(out.getvalue()) == [
        "[t=0]   Job 1: 4 prompts",
        "[t=0.7] Job 2: 4 prompts",
        "Ctrl+C: stopping",
        "[t=0]   Progress: 50% (2/4)",
        "[t=0.7] Progress: 50% (2/4)",
    ]
    first.write("\n")  # the job's last progress line, kept
    print("Completed: 4 succeeded", file=first)
    assert screen(out.getvalue())[-3:] == [
        "[t=0]   Progress: 50% (2/4)",
        "[t=0]   Completed: 4 succeeded",
        "[t=0.7] Progress: 50% (2/4)",
    ]


def test_in_a_log_every_line_goes_out_after_its_jobs_name():
    out = io.StringIO()
    board = ProgressBoard(out)
    stream = board.stream_for("a.txt")
    printer = ProgressPrinter(stream)
    printer.note("a server is out")
    print("Completed: 2 succeeded", file=stream)
    print("a line of the group's", file=board.group_stream())
    assert out.getvalue().splitlines() == [
        "[a.txt] tui-batch: a server is out",
        "[a.txt] Completed: 2 succeeded",
        "a line of the group's",
    ]
