"""Suffix automata: the static one over a corpus and the dynamic one over the live sequence.

The package's layout: :mod:`~sam_decoding.automaton.tokens` (token ids in, and their one range
check), :mod:`~sam_decoding.automaton.results` (what a query answers, and the scored search's
options) and :mod:`~sam_decoding.automaton.automata` (the automata and cursors: the only module
that imports the native core). Everything is importable from here, as before the split.
"""

from sam_decoding.automaton.automata import (
    FORMAT_VERSION,
    MAX_BUILD_TEXT_LENGTH,
    DynamicAutomaton,
    FormatError,
    StaticAutomaton,
    StaticCursor,
    TokenizerMismatchError,
    native_automata,
)
from sam_decoding.automaton.results import DraftChain, DraftTree, ScoredDraft, ScoredDraftOptions
from sam_decoding.automaton.tokens import (
    MAX_TOKEN_ID,
    PathLike,
    TokenSequence,
    as_token_array,
    checked_token_array,
)

__all__ = [
    "FORMAT_VERSION",
    "MAX_BUILD_TEXT_LENGTH",
    "MAX_TOKEN_ID",
    "DraftChain",
    "DraftTree",
    "DynamicAutomaton",
    "FormatError",
    "PathLike",
    "ScoredDraft",
    "ScoredDraftOptions",
    "StaticAutomaton",
    "StaticCursor",
    "TokenSequence",
    "TokenizerMismatchError",
    "as_token_array",
    "checked_token_array",
    "native_automata",
]
