"""`python -m tui_batch` and the `tui-batch` command.

Ctrl+C can come while Python is still importing the command line (the first second): it
stops there with one line and exit status 130, as later, never a traceback; a second
Ctrl+C while it stops is the same request. The command line installs its own handlers
once it runs (`cli.terminal.cancel_on_signals`).
"""

import contextlib
import os
import signal
import sys

EXIT_INTERRUPTED = 130


def _interrupted(signum: int, frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> int:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
    try:
        from tui_batch.cli import main as command_line

        code = command_line()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\ntui-batch: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        # CPython 3.11 remembers a KeyboardInterrupt raised in code an extension runs
        # while it imports (PyRun_*) as unhandled, even once caught, and after a clean
        # return ends the process by SIGINT (-2): leave with our status ourselves. What
        # was done is saved already; only the streams are left to flush.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
