"""The KV cache after a tree step holds exactly the accepted path: continuing equals a fresh forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from sam_decoding.drafters import Draft, Drafter, Verified
from sam_decoding.generation import generate
from sam_decoding.kv_cache import cache_arguments, keep_cache_entries
from sam_decoding.verification import build_step_inputs, walk
from conftest import TINY_PAD, TINY_VOCAB


def _decoy_tree(truth: list[int]) -> Draft:
    """A tree whose true path always runs through the *second* child, behind a wrong first child with its own subtree."""
    tokens: list[int] = []
    parents: list[int] = []
    parent = -1
    for token in truth:
        decoy = (token + 1) % TINY_VOCAB
        tokens += [decoy, (decoy + 5) % TINY_VOCAB]
        parents += [parent, len(tokens) - 2]
        tokens.append(token)
        parents.append(parent)
        parent = len(tokens) - 1
    return Draft(np.array(tokens, dtype=np.int64), np.array(parents, dtype=np.int32), "decoy")


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_continuing_after_a_tree_step_equals_a_fresh_forward(tiny_models, family: str, implementation: str) -> None:
    model = tiny_models[(family, implementation)]
    prompt = torch.tensor([[5, 9, 33, 71, 2, 48, 19, 7]])
    reference = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=TINY_PAD)
    truth = reference[0, prompt.shape[1] :].tolist()
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(prompt[:, :-1], **cache_arguments(model, cache), use_cache=True)
        past = prompt.shape[1] - 1
        inputs = build_step_inputs(int(prompt[0, -1]), _decoy_tree(truth[:4]), past, dtype=torch.float32, device=torch.device("cpu"))
        logits = model(
            input_ids=inputs.input_ids, position_ids=inputs.position_ids, attention_mask=inputs.attention_mask,
            **cache_arguments(model, cache), use_cache=True,
        ).logits[0]
        choices = logits.argmax(-1).tolist()
        emitted, path = walk(inputs, choices.__getitem__, lambda token: False)
        assert emitted == truth[:5]
        assert path != list(range(len(path))), "the accepted path must be non-contiguous for this test"
        keep_cache_entries(cache, past, path)
        assert cache.get_seq_length() == past + len(path)

        # Feed the bonus token and one more: the cache must behave as if only the accepted tokens were ever fed.
        continued = model(
            input_ids=torch.tensor([[emitted[-1], truth[5]]]), **cache_arguments(model, cache), use_cache=True
        ).logits[0]
        fresh = model(torch.cat([prompt, torch.tensor([truth[:6]])], dim=1)).logits[0, -2:]
        torch.testing.assert_close(continued, fresh, atol=1e-4, rtol=1e-4)


class DecoyTreeDrafter(Drafter):
    """Knows the true continuation and hides it behind decoy siblings at every level."""

    proposes_trees = True

    def __init__(self, truth: list[int]) -> None:
        self.truth = truth
        self.position = 0

    def begin(self, prompt_ids: np.ndarray) -> None:
        self.position = 0

    def propose(self, max_tokens: int) -> Draft:
        return _decoy_tree(self.truth[self.position : self.position + min(max_tokens, 5)])

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        self.position += len(tokens)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_many_tree_steps_stay_exact(tiny_models, family: str) -> None:
    model = tiny_models[(family, "sdpa")]
    prompt = torch.tensor([[11, 4, 90, 23, 23, 60]])
    reference = model.generate(prompt, max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=TINY_PAD)
    drafter = DecoyTreeDrafter(reference[0, prompt.shape[1] :].tolist())
    # policy="all": every drafted node is verified, so every step exercises the tree pruning.
    result = generate(model, prompt, max_new_tokens=40, drafter=drafter, eos_token_id=[], policy="all")
    assert torch.equal(result.sequences, reference)
    # Every step accepts the full 5-token true path plus the bonus token.
    assert result.stats.mean_accepted_tokens > 5
