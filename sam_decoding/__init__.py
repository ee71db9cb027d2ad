"""sam-decoding: lossless speculative decoding drafted by retrieval from suffix automata."""

from sam_decoding._core import __version__
from sam_decoding.automaton import (
    FORMAT_VERSION,
    DraftTree,
    DynamicAutomaton,
    FormatError,
    StaticAutomaton,
    StaticCursor,
    TokenizerMismatchError,
)

__all__ = [
    "FORMAT_VERSION",
    "DraftTree",
    "DynamicAutomaton",
    "FormatError",
    "StaticAutomaton",
    "StaticCursor",
    "TokenizerMismatchError",
    "__version__",
]
