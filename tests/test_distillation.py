"""Distillation: batched greedy answers equal one-at-a-time ones; the output file resumes after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_FAMILIES, TINY_PAD, TINY_VOCAB

from sam_decoding.corpus import CorpusError
from sam_decoding.distillation import Prompt, append_jsonl, greedy_continuations, resume_distill_output, select_prompts

#: Prompt lengths of one batch: very different, so that most rows carry left padding.
PROMPT_LENGTHS = (3, 17, 1, 40, 9, 25, 6, 33, 12, 2)


def _prompts(seed: int) -> list[list[int]]:
    """Random prompts, each holding the pad token (as chat prompts hold SmolLM2's pad = EOS token),
    so that only the attention mask, not the token ids, tells padding from prompt."""
    generator = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, TINY_VOCAB, (length,), generator=generator).tolist() for length in PROMPT_LENGTHS]
    for prompt in prompts:
        prompt[len(prompt) // 2] = TINY_PAD
    return prompts


def _alone(model: torch.nn.Module, prompt: list[int], max_new_tokens: int, eos: list[int]) -> list[int]:
    """transformers' own greedy decoding of one unpadded prompt: the reference."""
    input_ids = torch.tensor([prompt])
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos or None,
            pad_token_id=TINY_PAD,
        )
    return output[0, len(prompt) :].tolist()


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_batch_answers_as_each_prompt_alone(tiny_models, family: str, attention: str) -> None:
    model = tiny_models[(family, attention)]
    prompts = _prompts(seed=len(family))
    # No EOS: every row runs the full length, so every position is compared.
    batched = greedy_continuations(model, prompts, max_new_tokens=24, eos=[], pad_token_id=TINY_PAD)
    assert batched == [_alone(model, prompt, 24, []) for prompt in prompts]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_each_answer_ends_after_its_first_eos(tiny_models, family: str) -> None:
    model = tiny_models[(family, "sdpa")]
    prompts = _prompts(seed=7)
    # Make EOS a token the first prompt's answer emits at step 3, so rows stop at different steps.
    eos = [_alone(model, prompts[0], 24, [])[3]]
    batched = greedy_continuations(model, prompts, max_new_tokens=24, eos=eos, pad_token_id=TINY_PAD)
    expected = [_alone(model, prompt, 24, eos) for prompt in prompts]
    assert batched == expected
    assert len(batched[0]) <= 4 and batched[0][-1] == eos[0]
    assert any(len(answer) == 24 for answer in batched)
    assert all(answer.count(eos[0]) <= 1 for answer in batched)


def test_steps_are_reported_and_bad_prompts_refused(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    steps: list[int] = []
    greedy_continuations(model, [[5, 6], [7]], max_new_tokens=5, eos=[], pad_token_id=TINY_PAD, on_step=steps.append)
    assert steps == [1, 2, 3, 4, 5]
    assert greedy_continuations(model, [], max_new_tokens=5, eos=[], pad_token_id=TINY_PAD) == []
    with pytest.raises(ValueError, match="empty prompt"):
        greedy_continuations(model, [[5], []], max_new_tokens=5, eos=[], pad_token_id=TINY_PAD)


def _record(prompt_id: str) -> dict:
    return {"id": prompt_id, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def test_resume_repairs_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    assert resume_distill_output(path) == set() and not path.exists()
    complete = "".join(json.dumps(_record(i)) + "\n" for i in ("1", "2"))
    path.write_text(complete + json.dumps(_record("3"))[:20], encoding="utf-8")
    assert resume_distill_output(path) == {"1", "2"}
    assert path.read_text(encoding="utf-8") == complete
    # A whole record without its newline was cut while being written: it is redone too.
    path.write_text(complete + json.dumps(_record("3")), encoding="utf-8")
    assert resume_distill_output(path) == {"1", "2"}
    assert append_jsonl([_record("3")], path) == 1
    assert resume_distill_output(path) == {"1", "2", "3"}
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "1", "messages": []}\n{"id": \n{"id": "3", "messages": []}\n', r"answers.jsonl:2: invalid JSON"),
        ('{"title": "not a conversation"}\n', r"answers.jsonl:1: not a distilled conversation"),
        ("\udcff\n", "not UTF-8"),
    ],
)
def test_resume_refuses_a_file_that_is_not_a_distill_output(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(CorpusError, match=message):
        resume_distill_output(path)
    assert path.read_bytes() == content.encode("utf-8", "surrogateescape")


def test_each_record_is_on_disk_as_soon_as_it_is_yielded(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    seen_on_disk = []

    def records():
        for prompt_id in ("1", "2", "3"):
            yield _record(prompt_id)
            seen_on_disk.append(resume_distill_output(path))

    append_jsonl(records(), path)
    assert seen_on_disk == [{"1"}, {"1", "2"}, {"1", "2", "3"}]


def test_select_prompts_limits_before_skipping_answered_ids() -> None:
    prompts = [Prompt(str(i), f"q{i}") for i in range(5)]
    assert [p.prompt_id for p in select_prompts(prompts, {"1"}, 3)] == ["0", "2"]
    assert [p.prompt_id for p in select_prompts(prompts, (), None)] == ["0", "1", "2", "3", "4"]
