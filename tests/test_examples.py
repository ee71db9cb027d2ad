"""Every script in examples/ runs as a user would run it, on the real default model, and says what it shows."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Few tokens: each script runs in seconds; what it demonstrates does not depend on the length.
SHORT = ["--max-new-tokens", "12"]


def run_example(name: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> str:
    script = EXAMPLES / name
    assert script.is_file(), f"{script} is missing (the tests expect examples/ beside tests/)"
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    runpy.run_path(str(script), run_name="__main__")
    return capsys.readouterr().out


def test_every_example_is_tested() -> None:
    tested = {"corpus_from_folder.py", "custom_generate.py", "sampling.py", "sharded_corpus.py"}
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


@pytest.mark.slow
def test_corpus_from_folder(monkeypatch, capsys) -> None:
    out = run_example("corpus_from_folder.py", SHORT, monkeypatch, capsys)
    assert out.startswith("corpus: ") and "tokens in" in out
    assert out.rstrip().endswith("per forward pass")


@pytest.mark.slow
def test_custom_generate_equals_plain_generate(monkeypatch, capsys) -> None:
    out = run_example("custom_generate.py", SHORT, monkeypatch, capsys)
    assert out.rstrip().endswith("identical to plain model.generate: True")


@pytest.mark.slow
def test_sampling_is_reproducible_by_seed(monkeypatch, capsys) -> None:
    out = run_example("sampling.py", SHORT, monkeypatch, capsys)
    assert out.rstrip().endswith("same seed, same text: True")


@pytest.mark.slow
def test_sharded_corpus(monkeypatch, capsys) -> None:
    # Small shards so that the package's own sources make several of them.
    out = run_example("sharded_corpus.py", [*SHORT, "--shard-tokens", "20000"], monkeypatch, capsys)
    shards = int(out.split("corpus: ", 1)[1].split(" shards", 1)[0])
    assert shards >= 3  # at least two built from the folder, plus the one added
    assert out.rstrip().endswith("per forward pass")
