"""Reading inputs into documents: every input kind, the JSONL auto-detection, and clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from sam_decoding.corpus import (
    ChatDocument,
    CorpusError,
    ReadOptions,
    ReadTally,
    TextDocument,
    read_documents,
    tokenize_documents,
)

CHAT = [{"role": "user", "content": "What is a suffix automaton?"}, {"role": "assistant", "content": "A DFA of all suffixes."}]


@pytest.fixture(scope="module")
def tokenizer():
    from sam_decoding.models import load_tokenizer

    return load_tokenizer()


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def test_plain_text_file_is_one_document(tmp_path: Path) -> None:
    file = tmp_path / "notes.md"
    file.write_text("# Title\n\nSome text.\n", encoding="utf-8")
    assert list(read_documents([file])) == [TextDocument(str(file), "# Title\n\nSome text.\n")]


def test_directory_walk_honours_glob_exclude_hidden_and_binary(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "tests").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("a = 1\n")
    (tmp_path / "pkg" / "b.py").write_text("b = 2\n")
    (tmp_path / "pkg" / "tests" / "test_a.py").write_text("assert a\n")
    (tmp_path / "pkg" / "readme.txt").write_text("not python\n")
    (tmp_path / ".git" / "hook.py").write_text("hidden\n")
    (tmp_path / "pkg" / "blob.py").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "pkg" / "latin1.py").write_bytes("caf\xe9".encode("latin-1"))
    tally = ReadTally()
    options = ReadOptions(glob="**/*.py", exclude=("pkg/tests/*",))
    texts = [document.text for document in read_documents([tmp_path], options, tally)]
    assert texts == ["a = 1\n", "b = 2\n"]
    assert tally.files == 2
    assert sorted(Path(p).name for p in tally.skipped_files) == ["blob.py", "latin1.py"]


def test_jsonl_with_text_field(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "data.jsonl", [{"body": "first"}, {"body": "second"}])
    documents = list(read_documents([file], ReadOptions(text_field="body")))
    assert [d.text for d in documents] == ["first", "second"]
    assert documents[1].source == f"{file}:2"


def test_jsonl_auto_detects_text_and_chats(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "mixed.jsonl", [{"text": "plain"}, {"messages": CHAT}, CHAT, {"conversation": CHAT}])
    documents = list(read_documents([file]))
    assert isinstance(documents[0], TextDocument)
    assert all(isinstance(d, ChatDocument) and list(d.messages) == CHAT for d in documents[1:])


def test_chat_field_and_gzip(tmp_path: Path) -> None:
    file = tmp_path / "chats.jsonl.gz"
    with gzip.open(file, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"dialog": CHAT}) + "\n\n")
    documents = list(read_documents([file], ReadOptions(chat_field="dialog")))
    assert len(documents) == 1 and list(documents[0].messages) == CHAT


@pytest.mark.parametrize(
    ("records", "options", "message"),
    [
        ([{"title": "x"}], ReadOptions(), "cannot tell what to read"),
        ([{"body": 3}], ReadOptions(text_field="body"), "is not a string"),
        ([{"text": "x"}], ReadOptions(text_field="body"), "no field 'body'"),
        ([{"dialog": [{"role": "user"}]}], ReadOptions(chat_field="dialog"), "not a list of {role, content}"),
        ([3], ReadOptions(), "expected a JSON object"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, records: list, options: ReadOptions, message: str) -> None:
    file = tmp_path / "bad.jsonl"
    # A blank first line is skipped but still counted, so the bad record is line 2.
    file.write_text("\n" + json.dumps(records[0]) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"bad.jsonl:2: .*{message}".replace("{", r"\{").replace("}", r"\}")):
        list(read_documents([file], options))


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.jsonl"
    file.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"broken.jsonl:2: invalid JSON"):
        list(read_documents([file]))


def test_missing_binary_and_undecodable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file or directory"):
        list(read_documents([tmp_path / "missing.txt"]))
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\x00\x00")
    with pytest.raises(CorpusError, match="binary file"):
        list(read_documents([binary]))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        list(read_documents([latin]))
    with pytest.raises(CorpusError, match="no files match"):
        list(read_documents([tmp_path], ReadOptions(glob="**/*.rs")))


def test_tokenized_documents_match_single_encoding(tmp_path: Path, tokenizer) -> None:
    texts = ["def f(x):\n    return x + 1\n", "Bonjour le monde", "", "x" * 50]
    documents = [TextDocument(str(i), text) for i, text in enumerate(texts)]
    tally = ReadTally()
    # A small batch size forces several batches, so batching cannot reorder or merge documents.
    arrays = list(tokenize_documents(documents, tokenizer, batch_chars=20, tally=tally))
    expected = [tokenizer.encode(text, add_special_tokens=False) for text in texts if text]
    assert [a.tolist() for a in arrays] == expected
    assert all(a.dtype == np.int32 for a in arrays)
    assert tally.documents == 3 and tally.tokens == sum(map(len, expected))


def test_chats_are_rendered_with_the_chat_template(tokenizer) -> None:
    [array] = tokenize_documents([ChatDocument("c", tuple(CHAT))], tokenizer)
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert array.tolist() == tokenizer.encode(rendered, add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in array.tolist()
