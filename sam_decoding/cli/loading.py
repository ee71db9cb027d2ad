"""Loading what the commands work on (models, tokenizers, corpus automata), failing with one clear line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam_decoding.cli.errors import CliError

if TYPE_CHECKING:
    from sam_decoding.automaton import StaticAutomaton
    from sam_decoding.shards import ShardedAutomaton


_MODEL_FILES = ("config.json",)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and advisory logging on the terminal."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


#: ``--dtype`` choices: ``auto`` (bfloat16 on CUDA, float32 elsewhere) or a weight dtype.
DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_placement_arguments(parser: Any) -> None:
    """Add ``--device`` and ``--dtype`` (where and in what precision the model runs) to ``parser``."""
    parser.add_argument(
        "--device", metavar="DEVICE", default="auto",
        help="torch device: auto (CUDA when available, else cpu), cpu, cuda, cuda:1, mps (default: auto)",
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default="auto",
        help="weight dtype: auto is bfloat16 on CUDA and float32 elsewhere; greedy output is exact token for "
        "token in float32 (default: auto)",
    )


def resolve_placement(device: str | None, dtype: str | None) -> tuple[Any, Any]:
    """``--device`` and ``--dtype`` as a ``torch.device`` and ``torch.dtype``, or a :class:`CliError` in one line."""
    from sam_decoding.models import resolve_device, resolve_dtype

    try:
        target = resolve_device(device)
        return target, resolve_dtype(dtype, target)
    except ValueError as error:
        raise CliError(f"--{str(error)}") from None


def load_model_and_tokenizer(
    name_or_path: str | None, *, dtype: str | None = None, device: str | None = None
) -> tuple[Any, Any]:
    """The causal LM and tokenizer named by ``--model`` (``None``: the default model).

    ``device`` and ``dtype`` are the ``--device``/``--dtype`` values (``None`` or ``auto``: CUDA in
    bfloat16 when available, else the CPU in float32), checked before the model loads.
    """
    from sam_decoding.models import load_model, load_tokenizer

    target, weights = resolve_placement(device, dtype)
    quiet_transformers()
    _check_local_path(name_or_path, "model")
    model = load_model(name_or_path, device=target, dtype=weights)
    return model, load_tokenizer(name_or_path)


def load_tokenizer_only(name_or_path: str | None) -> Any:
    """The tokenizer named by ``--tokenizer`` (``None``: the default model's)."""
    from sam_decoding.models import load_tokenizer

    quiet_transformers()
    _check_local_path(name_or_path, "tokenizer")
    return load_tokenizer(name_or_path)


def _check_local_path(name_or_path: str | None, what: str) -> None:
    # A path-like argument that does not exist would otherwise be tried as a hub id, which
    # fails after a network timeout with a message about repository names.
    if name_or_path is None:
        return
    path = Path(name_or_path).expanduser()
    hub_id_shape = not name_or_path.startswith((".", "/", "~")) and name_or_path.count("/") <= 1
    if not path.exists() and not hub_id_shape:
        raise CliError(f"{what} {name_or_path}: no such file or directory")
    if path.is_file():
        raise CliError(f"{what} {name_or_path}: expected a model directory, not a file")
    if path.is_dir():
        expected = _MODEL_FILES if what == "model" else _TOKENIZER_FILES
        if not any((path / name).is_file() for name in expected):
            raise CliError(
                f"{what} {name_or_path}: not a Hugging Face {what} directory (none of {', '.join(expected)})"
            )


def open_corpus(path: str | os.PathLike[str], *, verify: bool = False) -> StaticAutomaton | ShardedAutomaton:
    """Load a corpus: an automaton file, or a sharded corpus (a directory of shards or its
    ``manifest.json``); ``verify`` also checks every full checksum."""
    from sam_decoding.shards import load_corpus

    file = Path(path)
    if not file.exists():
        raise CliError(f"{file}: no such file or directory")
    try:
        return load_corpus(file, verify=verify)
    except (ValueError, FileNotFoundError) as error:  # FormatError: truncated, foreign or corrupt
        raise CliError(f"{file}: {error}") from None


def open_corpus_for_tokenizer(
    path: str | os.PathLike[str], tokenizer: Any
) -> StaticAutomaton | ShardedAutomaton:
    """The corpus at ``path``, refused unless it was built with ``tokenizer`` (same fingerprint)."""
    from sam_decoding.models import tokenizer_fingerprint

    corpus = open_corpus(path)
    try:
        corpus.check_tokenizer(tokenizer_fingerprint(tokenizer))
    except ValueError as error:
        raise CliError(f"{path}: refusing a corpus built for another tokenizer: {error}") from None
    return corpus
