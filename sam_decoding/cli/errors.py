"""How the command line reports failures: one line on stderr and a non-zero exit code, no traceback."""

from __future__ import annotations

import os
import sys

PROGRAM = "sam-decoding"
#: Exit code for failures in running a command (bad inputs, unloadable models, corrupt files).
EXIT_FAILURE = 1
#: Exit code for a malformed command line, as argparse uses.
EXIT_USAGE = 2
#: Exit code after Ctrl-C, by the shell convention 128 + SIGINT.
EXIT_INTERRUPTED = 130
#: Set this environment variable to any non-empty value to see tracebacks of unexpected errors.
DEBUG_VARIABLE = "SAM_DECODING_DEBUG"
_MAX_MESSAGE_CHARS = 500


class CliError(Exception):
    """A failure the user can fix; its message is printed as the one error line."""


def one_line(message: str) -> str:
    """``message`` folded onto one line and cut to a readable length (characters)."""
    folded = " ".join(message.split())
    if len(folded) > _MAX_MESSAGE_CHARS:
        folded = folded[: _MAX_MESSAGE_CHARS - 3] + "..."
    return folded


def report_error(message: str) -> None:
    """Print ``sam-decoding: error: MESSAGE`` to stderr."""
    print(f"{PROGRAM}: error: {one_line(message)}", file=sys.stderr, flush=True)


def debugging() -> bool:
    """Whether the user asked for tracebacks of unexpected errors."""
    return bool(os.environ.get(DEBUG_VARIABLE))


def describe(error: BaseException) -> str:
    """A user-facing description of ``error``, naming the file for OS errors."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__
