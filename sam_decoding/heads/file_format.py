"""The heads file: safetensors holding the residual blocks, with a JSON config naming the base model.

Layout (one ``.safetensors`` file, readable by any safetensors tool):

* tensors ``blocks.{k}.linear.weight`` (float16 ``[hidden, hidden]``) and ``blocks.{k}.linear.bias``
  (float16 ``[hidden]``) for ``k`` in ``0..num_heads-1``; ``identity.probe`` (float32
  ``[rows, hidden]``, see :mod:`sam_decoding.heads.identity`); optionally ``vocabulary`` (int64, the
  draft vocabulary);
* header metadata ``format`` = ``"sam-decoding-heads"`` (the magic), ``format_version``, ``config``
  (JSON: number of heads, sizes, the base model's identity, tokenizer fingerprint, training record)
  and ``tensors_sha256``, a hash of every tensor's name, dtype, shape and bytes.

Reading trusts nothing: the header length, the JSON, every shape and dtype and the checksum are
checked, and any failure is a :class:`HeadsFormatError` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sam_decoding.atomic_file import replacing_atomically
from sam_decoding.heads.identity import ModelIdentity, probe_row_indices

MAGIC = "sam-decoding-heads"
FORMAT_VERSION = 1
#: Most heads a file may hold (and a :class:`~sam_decoding.heads.MedusaHeads` may have).
MAX_HEADS = 64
#: How the heads were trained (data, times, held-out accuracy): free-form JSON kept in the file.
TrainingRecord = dict[str, Any]
_MAX_HEADER_BYTES = 1 << 24
_MAX_HIDDEN = 1 << 16
_MAX_VOCAB = 1 << 24


class HeadsFormatError(ValueError):
    """A file is not a heads file of a supported version, or is truncated or corrupt."""


class HeadsMismatchError(ValueError):
    """A heads file was trained for another model or tokenizer than the one it is used with."""


@dataclass(frozen=True)
class StoredHeads:
    """The contents of a heads file, not bound to a model: what :func:`write_heads_file` writes
    and :func:`read_heads_file` returns, validated.

    ``block_state`` maps ``blocks.{k}.linear.weight`` / ``.bias`` to the blocks' tensors (stored
    as float16, read back as float32)."""

    num_heads: int
    identity: ModelIdentity
    vocabulary: torch.Tensor | None
    tokenizer_fingerprint: str | None
    training: TrainingRecord | None
    block_state: dict[str, torch.Tensor]

    def check_model(self, model: torch.nn.Module, tokenizer_fingerprint: str | None, source: Any) -> None:
        """Raise :class:`HeadsMismatchError` unless ``model`` (and tokenizer, if given) are the ones trained for."""
        reason = self.identity.mismatch(ModelIdentity.of(model))
        if reason is not None:
            raise HeadsMismatchError(f"{source}: refusing heads for another model: {reason}")
        if (
            tokenizer_fingerprint is not None
            and self.tokenizer_fingerprint is not None
            and tokenizer_fingerprint != self.tokenizer_fingerprint
        ):
            raise HeadsMismatchError(
                f"{source}: refusing heads for another tokenizer: trained with {self.tokenizer_fingerprint}, "
                f"given {tokenizer_fingerprint}"
            )


def write_heads_file(heads: StoredHeads, path: str | os.PathLike[str]) -> None:
    """Write ``heads`` to ``path`` atomically (an interrupted write leaves no partial file)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {
        name: value.detach().to("cpu", torch.float16).contiguous() for name, value in heads.block_state.items()
    }
    tensors["identity.probe"] = heads.identity.probe.float().contiguous()
    if heads.vocabulary is not None:
        tensors["vocabulary"] = heads.vocabulary.long().contiguous()
    config = {
        "num_heads": heads.num_heads,
        "hidden_size": heads.identity.hidden_size,
        "vocab_size": heads.identity.vocab_size,
        "draft_vocab_size": None if heads.vocabulary is None else len(heads.vocabulary),
        "model": heads.identity.metadata(),
        "tokenizer_fingerprint": heads.tokenizer_fingerprint,
        "training": heads.training,
    }
    metadata = {
        "format": MAGIC,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config, sort_keys=True),
        "tensors_sha256": _tensors_digest(tensors),
    }
    data = save(tensors, metadata=metadata)
    with replacing_atomically(path) as temporary:
        Path(temporary).write_bytes(data)


def read_heads_file(path: str | os.PathLike[str]) -> StoredHeads:
    """Read and validate a heads file; raise :class:`HeadsFormatError` if it is not a sound one."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except IsADirectoryError:
        raise HeadsFormatError(f"{file}: is a directory, not a heads file") from None
    except OSError as error:
        raise HeadsFormatError(f"cannot read heads file {file}: {error.strerror or error}") from None
    return _parse(data, str(file))


def _parse(data: bytes, source: str) -> StoredHeads:
    def fail(reason: str) -> HeadsFormatError:
        return HeadsFormatError(f"{source}: not a valid heads file: {reason}")

    if len(data) < 8:
        raise fail(f"{len(data)} bytes, shorter than a safetensors header (truncated?)")
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > min(_MAX_HEADER_BYTES, len(data) - 8):
        raise fail(f"header of {header_length} bytes does not fit in a file of {len(data)} bytes (truncated?)")
    try:
        header = json.loads(data[8 : 8 + header_length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise fail("its header is not JSON") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != MAGIC:
        raise fail(f"no {MAGIC!r} format marker (a safetensors file of something else?)")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise fail(f"format version {metadata.get('format_version')!r}; this version of sam-decoding reads {FORMAT_VERSION}")
    try:
        config = json.loads(metadata["config"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise fail("its config is missing or not JSON") from None
    if not isinstance(config, dict):
        raise fail("its config is not a JSON object")

    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as error:  # safetensors raises its own SafetensorError (not a ValueError) and others
        raise fail(f"unreadable tensors ({type(error).__name__}: {error})") from None
    if _tensors_digest(tensors) != metadata.get("tensors_sha256"):
        raise fail("tensor checksum mismatch (the file is corrupt)")

    num_heads = _bounded_int(config, "num_heads", 1, MAX_HEADS, fail)
    hidden = _bounded_int(config, "hidden_size", 1, _MAX_HIDDEN, fail)
    vocab = _bounded_int(config, "vocab_size", 1, _MAX_VOCAB, fail)
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("model_type"), str) or not isinstance(model.get("config_sha256"), str):
        raise fail("its config does not name the base model")
    expected = {f"blocks.{k}.linear.weight": ((hidden, hidden), torch.float16) for k in range(num_heads)}
    expected |= {f"blocks.{k}.linear.bias": ((hidden,), torch.float16) for k in range(num_heads)}
    expected["identity.probe"] = ((len(probe_row_indices(vocab)), hidden), torch.float32)
    vocabulary = tensors.get("vocabulary")
    if vocabulary is not None:
        expected["vocabulary"] = ((int(vocabulary.shape[0]) if vocabulary.dim() == 1 else -1,), torch.int64)
    if set(tensors) != set(expected):
        raise fail(f"unexpected tensors {sorted(set(tensors) ^ set(expected))}")
    for name, (shape, dtype) in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise fail(f"tensor {name} is {tensor.dtype} {tuple(tensor.shape)}, expected {dtype} {shape}")
        if dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            raise fail(f"tensor {name} holds non-finite values")
    if vocabulary is not None:
        if len(vocabulary) == 0 or int(vocabulary.min()) < 0 or int(vocabulary.max()) >= vocab:
            raise fail(f"draft vocabulary ids outside [0, {vocab})")
        if len(vocabulary) > 1 and not bool((vocabulary[1:] > vocabulary[:-1]).all()):
            raise fail("draft vocabulary ids are not sorted and distinct")
    identity = ModelIdentity(model["model_type"], hidden, vocab, model["config_sha256"], tensors["identity.probe"])
    tokenizer = config.get("tokenizer_fingerprint")
    training = config.get("training")
    return StoredHeads(
        num_heads=num_heads,
        identity=identity,
        vocabulary=vocabulary,
        tokenizer_fingerprint=tokenizer if isinstance(tokenizer, str) else None,
        training=training if isinstance(training, dict) else None,
        block_state={name: tensor.float() for name, tensor in tensors.items() if name.startswith("blocks.")},
    )


def _bounded_int(config: dict[str, Any], key: str, low: int, high: int, fail: Any) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise fail(f"config field {key!r} is {value!r}, expected an integer in [{low}, {high}]")
    return value


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()
