"""``model.generate(..., custom_generate=custom_generate)`` behaves like plain ``model.generate``."""

from __future__ import annotations

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from sam_decoding.drafters import PromptLookupDrafter, SamDrafter
from sam_decoding.hf_integration import custom_generate
from conftest import TINY_PAD

PROMPT = torch.tensor([[3, 77, 14, 14, 52, 9, 30, 77, 14]])


class RecordingStreamer:
    def __init__(self) -> None:
        self.chunks: list[list[int]] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.chunks.append(value.reshape(-1).tolist())

    def end(self) -> None:
        self.ended = True


class StopAfterToken(StoppingCriteria):
    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return input_ids[:, -1] == self.token


def test_greedy_custom_generate_equals_generate(tiny_model, assert_greedy_equal) -> None:
    kwargs = {"max_new_tokens": 50, "do_sample": False, "pad_token_id": TINY_PAD, "eos_token_id": None}
    reference = tiny_model.generate(PROMPT, **kwargs)
    ours = tiny_model.generate(PROMPT, custom_generate=custom_generate, **kwargs)
    assert_greedy_equal(tiny_model, ours, reference, f"hf/{type(tiny_model).__name__}")


def test_eos_streamer_stats_and_drafter_pass_through(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    free = model.generate(PROMPT, max_new_tokens=30, do_sample=False, pad_token_id=TINY_PAD, eos_token_id=None)
    eos = int(free[0, PROMPT.shape[1] + 9])
    reference = model.generate(PROMPT, max_new_tokens=30, do_sample=False, pad_token_id=TINY_PAD, eos_token_id=eos)
    streamer = RecordingStreamer()
    stats = []
    ours = model.generate(
        PROMPT, max_new_tokens=30, do_sample=False, pad_token_id=TINY_PAD, eos_token_id=eos,
        custom_generate=custom_generate, drafter=SamDrafter(None, fallback=PromptLookupDrafter()),
        sam_streamer=streamer, stats_callback=stats.append,
    )
    assert torch.equal(ours, reference)
    assert int(ours[0, -1]) == eos
    assert sum(streamer.chunks, []) == ours[0, PROMPT.shape[1] :].tolist() and streamer.ended
    assert stats[0].new_tokens == ours.shape[1] - PROMPT.shape[1]


def test_stopping_criteria_are_called_on_the_growing_sequence(tiny_models) -> None:
    model = tiny_models[("gpt2", "sdpa")]
    free = model.generate(PROMPT, max_new_tokens=40, do_sample=False, pad_token_id=TINY_PAD, eos_token_id=None)
    stop_token = int(free[0, PROMPT.shape[1] + 12])
    criteria = StoppingCriteriaList([StopAfterToken(stop_token)])
    reference = model.generate(
        PROMPT, max_new_tokens=40, do_sample=False, pad_token_id=TINY_PAD, eos_token_id=None, stopping_criteria=criteria
    )
    ours = model.generate(
        PROMPT, max_new_tokens=40, do_sample=False, pad_token_id=TINY_PAD, eos_token_id=None,
        stopping_criteria=criteria, custom_generate=custom_generate,
    )
    assert torch.equal(ours, reference)
    assert int(ours[0, -1]) == stop_token


def test_sampling_through_generate_is_reproducible(tiny_models) -> None:
    model = tiny_models[("qwen2", "sdpa")]
    outs = [
        model.generate(
            PROMPT, max_new_tokens=20, do_sample=True, top_k=5, temperature=0.7, pad_token_id=TINY_PAD,
            eos_token_id=None, custom_generate=custom_generate, generator=torch.Generator().manual_seed(3),
        )
        for _ in range(2)
    ]
    assert torch.equal(outs[0], outs[1])
    assert outs[0].shape[1] == PROMPT.shape[1] + 20


def test_batch_and_padding_are_refused(tiny_models) -> None:
    model = tiny_models[("llama", "sdpa")]
    with pytest.raises(ValueError, match="batch size 1"):
        model.generate(PROMPT.repeat(2, 1), max_new_tokens=3, pad_token_id=TINY_PAD, custom_generate=custom_generate)
    mask = torch.ones_like(PROMPT)
    mask[0, 0] = 0
    with pytest.raises(ValueError, match="padded"):
        model.generate(PROMPT, attention_mask=mask, max_new_tokens=3, pad_token_id=TINY_PAD, custom_generate=custom_generate)


@pytest.mark.slow
def test_default_model_through_generate(default_model, assert_greedy_equal) -> None:
    ids = default_model.chat_ids("Name three primary colors and explain why they are called primary.")
    model = default_model.model
    reference = model.generate(ids, max_new_tokens=40, do_sample=False)
    ours = model.generate(ids, max_new_tokens=40, do_sample=False, custom_generate=custom_generate)
    assert_greedy_equal(model, ours, reference, "hf/smollm2")
