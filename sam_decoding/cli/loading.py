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


#: ``--dtype`` choices: the torch dtypes the model's weights can be loaded in.
DTYPES = ("float32", "bfloat16", "float16")


def add_placement_arguments(parser: Any) -> None:
    """Add ``--dtype`` and ``--device`` (where and in what precision the model runs) to ``parser``."""
    parser.add_argument("--dtype", choices=DTYPES, help="weight dtype (default: float32)")
    parser.add_argument("--device", metavar="DEVICE", help="torch device: cpu, cuda, cuda:1, mps (default: cpu)")


def load_model_and_tokenizer(
    name_or_path: str | None, *, dtype: str | None = None, device: str | None = None
) -> tuple[Any, Any]:
    """The causal LM and tokenizer named by ``--model`` (``None``: the default model).

    ``dtype`` is one of :data:`DTYPES` (default float32); ``device`` a torch device string such as
    ``cpu``, ``cuda``, ``cuda:1`` or ``mps`` (default cpu), checked before the model loads.
    """
    import torch

    from sam_decoding.models import load_model, load_tokenizer

    target = check_device(device)
    quiet_transformers()
    _check_local_path(name_or_path, "model")
    model = load_model(name_or_path, dtype=getattr(torch, dtype) if dtype is not None else None)
    if target is not None:
        model = model.to(target)
    return model, load_tokenizer(name_or_path)


def check_device(device: str | None) -> Any:
    """``device`` as a ``torch.device`` if this machine has it, else a :class:`CliError` naming what is missing."""
    import torch

    if device is None:
        return None
    try:
        target = torch.device(device)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {device}: not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: CUDA is not available on this machine")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise CliError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif target.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--device {device}: MPS is not available on this machine")
    elif target.type not in ("cpu", "cuda", "mps"):
        raise CliError(f"--device {device}: unsupported device type {target.type!r} (use cpu, cuda or mps)")
    return target


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
