"""One exception type for everything a user can get wrong.

Bad input (a missing file, an unopenable camera, a malformed config, a wrong model file...) raises
``StreamFusionError`` with a one-line message; every command-line entry point catches it, prints
``error: <message>`` to stderr and exits with status 2, so users never see a traceback for their own mistakes.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


class StreamFusionError(Exception):
    """A user-facing error: its message is one line that says what is wrong and, where it can, what to do."""


def exit_with(error: BaseException, status: int = 2) -> NoReturn:
    """Print ``error: ...`` on one line and exit: the common ending of every CLI on bad input."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Run a CLI ``main`` so that user errors exit 2 with one line, Ctrl-C exits 130 quietly."""
    try:
        status = main()
    except StreamFusionError as error:
        exit_with(error)
    except KeyboardInterrupt:
        raise SystemExit(130)
    raise SystemExit(status or 0)


def first_line(error: object) -> str:
    """The first non-empty line of an error (or of a library's log), at most 300 characters: for one-line messages."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]
