"""The ``sam-decoding`` command line: build, info, generate, distill and bench.

Each subcommand lives in its own module, which registers its parser and handler. Heavy imports
(torch, transformers) happen inside the handlers so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from sam_decoding.cli import bench, build, distill, generate, info, profile, train_heads
from sam_decoding.cli.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROGRAM,
    CliError,
    debugging,
    describe,
    report_error,
)

__all__ = ["main", "build_parser"]

_DESCRIPTION = """\
Lossless speculative decoding drafted from suffix automata (SAM-Decoding).

Build a static corpus automaton from your files, inspect it, generate with it,
distill a corpus from a model's own answers, and benchmark against other methods."""

_EPILOG = """\
examples:
  sam-decoding build docs/ --glob '**/*.md' -o docs.sam
  sam-decoding info docs.sam --verify
  sam-decoding generate --corpus docs.sam --prompt 'How do I install it?' --chat --stream
  sam-decoding bench --suite spec-bench-mini --quick

run 'sam-decoding COMMAND --help' for the options of a command."""


class _UsageError(Exception):
    """argparse found a malformed command line; the message is already printed."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser that reports a usage error on one line and does not exit the process."""

    def error(self, message: str) -> NoReturn:
        print(
            f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr, flush=True
        )
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with one subparser per command."""
    parser = CommandParser(
        prog=PROGRAM,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    import sam_decoding

    version = getattr(sam_decoding, "__version__", "unknown")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=CommandParser
    )
    for module in (build, info, generate, distill, bench, profile, train_heads):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError:
        return EXIT_USAGE
    except SystemExit as exit_request:  # --help and --version exit through argparse
        return exit_request.code if isinstance(exit_request.code, int) else 0
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        report_error("interrupted")
        return EXIT_INTERRUPTED
    except _UsageError:
        return EXIT_USAGE
    except (CliError, OSError, ValueError, RuntimeError) as error:
        # FormatError, TokenizerMismatchError and CorpusError are ValueErrors and ModelLoadError is
        # a RuntimeError: all say what is wrong with the user's input in their message.
        if debugging():
            raise
        report_error(describe(error))
        return EXIT_FAILURE
    except Exception as error:
        if debugging():
            raise
        report_error(
            f"unexpected {type(error).__name__}: {describe(error)} "
            f"(set SAM_DECODING_DEBUG=1 to see the traceback)"
        )
        return EXIT_FAILURE
