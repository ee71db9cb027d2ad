"""Reading JSON Lines files: one JSON value per line, blank lines skipped."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def jsonl_records(
    lines: Iterable[str], source: str, error_type: type[Exception]
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, decoded value)`` for each non-blank line of ``lines``.

    An undecodable line raises ``error_type("<source>:<line>: invalid JSON (...)")``, so each
    caller reports bad input with its own error type.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise error_type(f"{source}:{number}: invalid JSON ({error.msg})") from None
