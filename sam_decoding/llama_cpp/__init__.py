"""sam-decoding for llama.cpp (through llama-cpp-python): speculative generation on GGUF models on the CPU.

Needs ``pip install llama-cpp-python``; this subpackage is the only part of sam-decoding that
imports it, and only when used.

* :func:`generate` / :func:`stream`: speculative generation on a ``llama_cpp.Llama``, greedy or sampled
  (exactly llama-cpp-python's distribution for ``temperature``, ``top_k``, ``top_p``, ``min_p``), drafted
  by any sam-decoding drafter and sized by the cost-aware policy at llama.cpp's measured cost.
* :class:`SamDraftModel`: the drafter behind llama-cpp-python's own ``Llama(draft_model=...)`` loop.
* :func:`tokenizer_fingerprint`: a ``Llama``'s vocabulary fingerprint, to check corpora against.
* ``python -m sam_decoding.llama_cpp.server``: an OpenAI-compatible completions server.
"""

from __future__ import annotations

from typing import Any

from sam_decoding.llama_cpp.draft_model import SamDraftModel
from sam_decoding.llama_cpp.generation import LlamaCppResult, generate, stream


def tokenizer_fingerprint(llm: Any) -> str:
    """The vocabulary fingerprint of a loaded ``llama_cpp.Llama`` (compare with a corpus's ``tokenizer_fingerprint``)."""
    from sam_decoding.gguf_vocabulary import llama_tokens, vocabulary_fingerprint

    return vocabulary_fingerprint(llama_tokens(llm))


__all__ = ["LlamaCppResult", "SamDraftModel", "generate", "stream", "tokenizer_fingerprint"]
