"""Reading user inputs into token documents for a static automaton.

Inputs are plain text files, directories (walked recursively with a glob), JSONL files holding a
text field per line, and chat JSONL files holding a list of ``{role, content}`` messages per line.
Chat conversations are rendered with the tokenizer's chat template so that the corpus contains the
same token sequences the model sees at generation time (role markers included).

Each file, JSONL line or conversation stays a separate document: the automaton never drafts
across a document boundary.
"""

from __future__ import annotations

import fnmatch
import gzip
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

import numpy as np

from sam_decoding.jsonl import jsonl_records

#: Keys tried, in order, for a chat JSONL line that is an object and no ``--chat-field`` was given.
CHAT_FIELD_CANDIDATES: tuple[str, ...] = ("messages", "conversation", "conversations", "chat")
#: Key tried for a JSONL line that is an object, holds no chat and no ``--text-field`` was given.
DEFAULT_TEXT_FIELD = "text"
#: How many bytes are sniffed for a NUL byte to tell binary files apart from text.
_SNIFF_BYTES = 8192


class CorpusError(ValueError):
    """An input cannot be read into documents; the message names the file (and line) at fault."""


@dataclass(frozen=True)
class TextDocument:
    """A plain text document and where it came from (``path`` or ``path:line``)."""

    source: str
    text: str


@dataclass(frozen=True)
class ChatDocument:
    """A conversation (``{role, content}`` messages) and where it came from (``path:line``)."""

    source: str
    messages: tuple[Mapping[str, str], ...]


Document = Union[TextDocument, ChatDocument]


@dataclass(frozen=True)
class ReadOptions:
    """How inputs are read.

    ``glob`` selects files inside directories (e.g. ``"**/*.py"``); ``exclude`` holds globs matched
    against paths relative to the directory (e.g. ``"site-packages/*"``). ``text_field`` and
    ``chat_field`` name the JSONL field to read; without them the kind of each line is detected.
    """

    glob: str = "**/*"
    exclude: tuple[str, ...] = ()
    text_field: str | None = None
    chat_field: str | None = None


@dataclass
class ReadTally:
    """Counts gathered while reading, for the build summary and the automaton's metadata."""

    files: int = 0
    skipped_files: list[str] = field(default_factory=list)
    documents: int = 0
    chat_documents: int = 0
    tokens: int = 0


def is_jsonl(path: Path) -> bool:
    """Whether ``path`` is read line by line as JSON (``.jsonl``, ``.ndjson``, optionally gzipped)."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in (".jsonl", ".ndjson")


def _open_text(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _looks_binary(path: Path) -> bool:
    if path.suffix.lower() == ".gz":
        return False
    with open(path, "rb") as handle:
        return b"\0" in handle.read(_SNIFF_BYTES)


def _as_messages(value: Any) -> tuple[Mapping[str, str], ...] | None:
    """``value`` as a conversation, or ``None`` if it is not a non-empty list of messages."""
    if not isinstance(value, list) or not value:
        return None
    for message in value:
        if not isinstance(message, dict):
            return None
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            return None
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def _parse_jsonl_line(record: Any, source: str, options: ReadOptions) -> Document:
    if options.chat_field is not None:
        if not isinstance(record, dict) or options.chat_field not in record:
            raise CorpusError(f"{source}: no field {options.chat_field!r}")
        messages = _as_messages(record[options.chat_field])
        if messages is None:
            raise CorpusError(
                f"{source}: field {options.chat_field!r} is not a list of {{role, content}} messages"
            )
        return ChatDocument(source, messages)
    if options.text_field is not None:
        if not isinstance(record, dict) or options.text_field not in record:
            raise CorpusError(f"{source}: no field {options.text_field!r}")
        text = record[options.text_field]
        if not isinstance(text, str):
            raise CorpusError(f"{source}: field {options.text_field!r} is not a string")
        return TextDocument(source, text)
    # Detect the kind of line: a bare message list, an object holding one, or an object with text.
    messages = _as_messages(record)
    if messages is not None:
        return ChatDocument(source, messages)
    if isinstance(record, dict):
        for key in CHAT_FIELD_CANDIDATES:
            messages = _as_messages(record.get(key))
            if messages is not None:
                return ChatDocument(source, messages)
        if isinstance(record.get(DEFAULT_TEXT_FIELD), str):
            return TextDocument(source, record[DEFAULT_TEXT_FIELD])
        fields = ", ".join(sorted(map(str, record))) or "none"
        raise CorpusError(
            f"{source}: cannot tell what to read from this line (fields: {fields}); "
            "pass --text-field or --chat-field"
        )
    raise CorpusError(f"{source}: expected a JSON object or a list of messages")


def read_jsonl(path: Path, options: ReadOptions) -> Iterator[Document]:
    """Yield one document per non-blank line of the JSONL file ``path``."""
    try:
        with _open_text(path) as handle:
            for number, record in jsonl_records(handle, str(path), CorpusError):
                yield _parse_jsonl_line(record, f"{path}:{number}", options)
    except UnicodeDecodeError:
        raise CorpusError(f"{path}: not UTF-8 text") from None
    except (OSError, EOFError) as error:
        raise CorpusError(f"cannot read {path}: {error.strerror or error}") from None


def read_text_file(path: Path) -> TextDocument:
    """Read ``path`` as one UTF-8 text document."""
    try:
        with _open_text(path) as handle:
            return TextDocument(str(path), handle.read())
    except UnicodeDecodeError:
        raise CorpusError(f"{path}: not UTF-8 text") from None
    except (OSError, EOFError) as error:
        raise CorpusError(f"cannot read {path}: {error.strerror or error}") from None


def _is_excluded(relative: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def directory_files(root: Path, options: ReadOptions) -> list[Path]:
    """Files under ``root`` matching ``options.glob``, sorted, without hidden or excluded paths."""
    selected = []
    for path in root.glob(options.glob):
        relative = path.relative_to(root)
        # Hidden directories are version control and tool state (.git, .venv), never corpus text.
        if any(part.startswith(".") for part in relative.parts):
            continue
        if _is_excluded(relative.as_posix(), options.exclude) or not path.is_file():
            continue
        selected.append(path)
    return sorted(selected)


def read_documents(
    inputs: Iterable[str | os.PathLike[str]],
    options: ReadOptions = ReadOptions(),
    tally: ReadTally | None = None,
) -> Iterator[Document]:
    """Yield the documents of every input, in order.

    A file named directly must be readable text or JSONL, otherwise :class:`CorpusError` is raised.
    Inside a directory, binary and non-UTF-8 files are skipped and listed in ``tally.skipped_files``.
    """
    tally = tally if tally is not None else ReadTally()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = directory_files(path, options)
            if not files:
                raise CorpusError(f"{path}: no files match {options.glob!r}")
            for file in files:
                if is_jsonl(file):
                    tally.files += 1
                    yield from read_jsonl(file, options)
                    continue
                try:
                    if _looks_binary(file):
                        tally.skipped_files.append(str(file))
                        continue
                    document = read_text_file(file)
                except (CorpusError, OSError):
                    tally.skipped_files.append(str(file))
                    continue
                tally.files += 1
                yield document
        elif path.is_file():
            tally.files += 1
            if is_jsonl(path):
                yield from read_jsonl(path, options)
            else:
                try:
                    binary = _looks_binary(path)
                except OSError as error:
                    raise CorpusError(f"cannot read {path}: {error.strerror or error}") from None
                if binary:
                    raise CorpusError(f"{path}: a binary file, not text")
                yield read_text_file(path)
        elif path.exists():
            raise CorpusError(f"{path}: not a regular file or directory")
        else:
            raise CorpusError(f"{path}: no such file or directory")


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]], source: str = "") -> str:
    """A conversation as the text the model sees, through the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise CorpusError(f"{source or 'chat input'}: the tokenizer has no chat template")
    try:
        rendered = tokenizer.apply_chat_template(list(messages), tokenize=False)
    except Exception as error:  # jinja2 raises its own types for a template that rejects the input
        raise CorpusError(f"{source}: the chat template failed: {error}") from None
    return str(rendered)


def document_text(tokenizer: Any, document: Document) -> str:
    """The text of ``document`` as it is tokenized (chats rendered with the chat template)."""
    if isinstance(document, ChatDocument):
        return render_chat(tokenizer, document.messages, document.source)
    return document.text


def tokenize_documents(
    documents: Iterable[Document],
    tokenizer: Any,
    *,
    batch_chars: int = 2_000_000,
    tally: ReadTally | None = None,
) -> Iterator[np.ndarray]:
    """Yield each non-empty document as a 1-D ``int32`` array of token ids.

    Documents are encoded in batches of about ``batch_chars`` characters, because a fast
    tokenizer encodes a batch on all cores in one call. No special tokens are added beyond the
    ones a chat template writes itself.
    """
    tally = tally if tally is not None else ReadTally()
    batch: list[str] = []
    batch_size = 0

    def flush() -> Iterator[np.ndarray]:
        encoded = tokenizer(
            batch, add_special_tokens=False, return_attention_mask=False, verbose=False
        )["input_ids"]
        for ids in encoded:
            if ids:
                tally.documents += 1
                tally.tokens += len(ids)
                yield np.asarray(ids, dtype=np.int32)

    for document in documents:
        text = document_text(tokenizer, document)
        if not text:
            continue
        if isinstance(document, ChatDocument):
            tally.chat_documents += 1
        batch.append(text)
        batch_size += len(text)
        if batch_size >= batch_chars:
            yield from flush()
            batch, batch_size = [], 0
    if batch:
        yield from flush()
