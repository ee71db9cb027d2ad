"""The README's example runs as written and prints what plain greedy generation gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    """The first Python code block under the README's "## Example" heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Example", 1)
    assert len(section) == 2, "README.md has no '## Example' section"
    match = re.search(r"```python\n(.*?)```", section[1], re.DOTALL)
    assert match, "the README's Example section has no python code block"
    return match.group(1)


def test_the_example_is_found() -> None:
    code = readme_example()
    assert "sd.generate(" in code and "print(" in code
    compile(code, "README.md", "exec")


@pytest.mark.slow
def test_readme_example_runs_and_equals_plain_greedy(tmp_path, monkeypatch, capsys, assert_greedy_equal) -> None:
    monkeypatch.chdir(tmp_path)  # the example saves corpus.sam into the working directory
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    model, tokenizer, prompt, result = (namespace[name] for name in ("model", "tokenizer", "prompt", "result"))
    ids = prompt["input_ids"] if not isinstance(prompt, torch.Tensor) else prompt
    new_tokens = len(result.new_tokens)
    reference = model.generate(ids, max_new_tokens=64, do_sample=False)
    assert_greedy_equal(model, result.sequences, reference, "README example")
    assert printed.startswith(tokenizer.decode(result.new_tokens))
    assert new_tokens > 0 and (tmp_path / "corpus.sam").is_file()
    # The model.generate snippet continues the example's namespace, as a reader would run it.
    exec(compile(readme_block("With transformers' `model.generate`"), "README.md", "exec"), namespace)
    assert torch.equal(namespace["output"], reference)


def readme_block(heading: str) -> str:
    """The first Python code block under the README heading ``## {heading}``."""
    section = README.read_text(encoding="utf-8").split(f"\n## {heading}", 1)
    assert len(section) == 2, f"README.md has no '## {heading}' section"
    match = re.search(r"```python\n(.*?)```", section[1].split("\n## ", 1)[0], re.DOTALL)
    assert match, f"the README's {heading} section has no python code block"
    return match.group(1)


def test_readme_response_cache_snippet_runs(tmp_path, monkeypatch) -> None:
    import sam_decoding as sd

    text = README.read_text(encoding="utf-8").split("\n## Example", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    snippet = next(block for block in blocks if "ResponseCache" in block)
    monkeypatch.chdir(tmp_path)
    corpus = sd.StaticAutomaton.build([[1, 2, 3, 4]])
    namespace: dict[str, object] = {"sd": sd, "corpus": corpus}
    exec(compile(snippet, "README.md", "exec"), namespace)
    drafter = namespace["drafter"]
    assert isinstance(drafter, sd.SamDrafter) and drafter.responses is namespace["cache"]
    assert (tmp_path / "responses.cache").exists()
