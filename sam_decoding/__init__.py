"""sam-decoding: lossless speculative decoding drafted by retrieval from suffix automata.

The automata (native, NumPy only) import eagerly; the generation engine, which needs torch and
transformers, is imported on first use so that corpus tooling starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sam_decoding.automaton import (
    FORMAT_VERSION,
    DraftChain,
    DraftTree,
    DynamicAutomaton,
    FormatError,
    ScoredDraft,
    StaticAutomaton,
    StaticCursor,
    TokenizerMismatchError,
)
from sam_decoding.automaton.automata import __version__
from sam_decoding.models import load_model, load_tokenizer, tokenizer_fingerprint
from sam_decoding.response_cache import ResponseCache
from sam_decoding.shards import ShardedAutomaton, ShardWriter, load_corpus

if TYPE_CHECKING:
    from sam_decoding.drafters import (
        Draft,
        Drafter,
        HeadsDrafter,
        ModelDrafter,
        PromptLookupDrafter,
        SamDrafter,
        TokenRecyclingDrafter,
        Verified,
    )
    from sam_decoding.generation import GenerationResult, GenerationStats, generate
    from sam_decoding.heads import MedusaHeads
    from sam_decoding.hf_integration import custom_generate
    from sam_decoding.policy import CostAwarePolicy, CostProfile

_LAZY = {
    "Draft": "sam_decoding.drafters",
    "Drafter": "sam_decoding.drafters",
    "Verified": "sam_decoding.drafters",
    "HeadsDrafter": "sam_decoding.drafters",
    "MedusaHeads": "sam_decoding.heads",
    "ModelDrafter": "sam_decoding.drafters",
    "PromptLookupDrafter": "sam_decoding.drafters",
    "SamDrafter": "sam_decoding.drafters",
    "TokenRecyclingDrafter": "sam_decoding.drafters",
    "GenerationResult": "sam_decoding.generation",
    "GenerationStats": "sam_decoding.generation",
    "generate": "sam_decoding.generation",
    "custom_generate": "sam_decoding.hf_integration",
    "CostAwarePolicy": "sam_decoding.policy",
    "CostProfile": "sam_decoding.policy",
}

__all__ = [
    "FORMAT_VERSION",
    "CostAwarePolicy",
    "CostProfile",
    "Draft",
    "DraftChain",
    "DraftTree",
    "ScoredDraft",
    "Drafter",
    "DynamicAutomaton",
    "FormatError",
    "GenerationResult",
    "GenerationStats",
    "HeadsDrafter",
    "MedusaHeads",
    "ModelDrafter",
    "PromptLookupDrafter",
    "ResponseCache",
    "SamDrafter",
    "ShardWriter",
    "ShardedAutomaton",
    "StaticAutomaton",
    "StaticCursor",
    "TokenRecyclingDrafter",
    "TokenizerMismatchError",
    "Verified",
    "__version__",
    "custom_generate",
    "generate",
    "load_corpus",
    "load_model",
    "load_tokenizer",
    "tokenizer_fingerprint",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sam_decoding' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
