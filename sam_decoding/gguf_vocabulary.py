"""The vocabulary of a GGUF model: its token texts, read from the file or from a loaded ``llama_cpp.Llama``.

A corpus records the fingerprint of the tokenizer it was built with
(:func:`sam_decoding.models.tokenizer_fingerprint`: a hash of every ``id -> token text`` pair). The
functions here compute the same fingerprint from a GGUF file's ``tokenizer.ggml.tokens`` list, or
from a running llama.cpp model, so a corpus built from the Hugging Face form of a model is accepted
by its GGUF form exactly when the two vocabularies agree token for token.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class VocabularyError(ValueError):
    """A GGUF file holds no readable vocabulary, or two vocabularies differ."""


def vocabulary_fingerprint(tokens: Sequence[str]) -> str:
    """The fingerprint of a vocabulary given as token texts in id order (token ``i`` has id ``i``).

    Equal to :func:`sam_decoding.models.tokenizer_fingerprint` of a Hugging Face tokenizer whose
    ``get_vocab()`` maps the same texts to the same ids.
    """
    digest = hashlib.sha256()
    for index, token in enumerate(tokens):
        digest.update(f"{index}\t{token}\n".encode("utf-8", "surrogatepass"))
    return f"vocab{len(tokens)}-sha256:{digest.hexdigest()[:16]}"


def gguf_tokens(path: str | os.PathLike[str]) -> list[str]:
    """The token texts of the GGUF file at ``path``, in id order (needs the ``gguf`` package)."""
    file = Path(path)
    if not file.is_file():
        raise VocabularyError(f"{file}: no such GGUF file")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise VocabularyError("reading a GGUF vocabulary needs the gguf package: pip install gguf") from None
    try:
        reader = GGUFReader(str(file))
    except Exception as error:  # the reader raises assorted errors on foreign or truncated files
        raise VocabularyError(f"{file}: not a readable GGUF file ({error})") from None
    field = reader.fields.get("tokenizer.ggml.tokens")
    if field is None:
        raise VocabularyError(f"{file}: the GGUF file holds no tokenizer.ggml.tokens vocabulary")
    return [bytes(field.parts[index]).decode("utf-8", "surrogateescape") for index in field.data]


def llama_tokens(llm: Any) -> list[str]:
    """The token texts of a loaded ``llama_cpp.Llama``, in id order."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    count = llama_cpp.llama_vocab_n_tokens(vocab)
    return [llama_cpp.llama_vocab_get_text(vocab, index).decode("utf-8", "surrogateescape") for index in range(count)]


def hf_tokens(tokenizer: Any) -> list[str]:
    """The token texts of a Hugging Face tokenizer in id order (``get_vocab()``; gaps raise :class:`VocabularyError`)."""
    vocab = tokenizer.get_vocab()
    tokens: list[str | None] = [None] * len(vocab)
    for token, index in vocab.items():
        if not 0 <= index < len(tokens) or tokens[index] is not None:
            raise VocabularyError("the tokenizer's ids are not the contiguous range 0..n-1")
        tokens[index] = token
    return [token for token in tokens if token is not None]


def first_difference(ours: Sequence[str], theirs: Sequence[str]) -> str | None:
    """``None`` if the vocabularies are identical, else one line naming the first difference."""
    for index, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return f"token {index} is {a!r} in one vocabulary and {b!r} in the other"
    if len(ours) != len(theirs):
        return f"the vocabularies hold {len(ours)} and {len(theirs)} tokens"
    return None
