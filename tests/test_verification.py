"""Tree layout, acceptance walk and cache pruning of one verification step."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from sam_decoding.drafters import Draft
from sam_decoding.kv_cache import cache_arguments, keep_cache_entries
from sam_decoding.verification import (
    UnsupportedModelError,
    build_step_inputs,
    check_tree_support,
    validate_draft,
    walk,
)

# Tree:        root(last token 9)
#             /        \
#          0:(4)       1:(5)
#          /   \          \
#       2:(6)  3:(7)      4:(6)
#        |
#       5:(8)
TREE = Draft(np.array([4, 5, 6, 7, 6, 8], dtype=np.int64), np.array([-1, -1, 0, 0, 1, 2], dtype=np.int32), "test")


def test_tree_layout_mask_and_positions() -> None:
    inputs = build_step_inputs(9, TREE, past_length=3, dtype=torch.float32, device=torch.device("cpu"))
    assert inputs.input_ids.tolist() == [[9, 4, 5, 6, 7, 6, 8]]
    assert inputs.position_ids.tolist() == [[3, 4, 4, 5, 5, 5, 6]]
    mask = inputs.attention_mask
    assert mask.shape == (1, 1, 7, 10)
    visible = (mask[0, 0] == 0).int()
    assert visible[:, :3].all(), "every node sees the cached prefix"
    expected = [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0, 0],
        [1, 1, 0, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0],
        [1, 0, 1, 0, 0, 1, 0],
        [1, 1, 0, 1, 0, 0, 1],
    ]
    assert visible[:, 3:].tolist() == expected
    assert (mask[0, 0][visible == 0] == torch.finfo(torch.float32).min).all()


def test_chain_layout_is_plain_causal() -> None:
    inputs = build_step_inputs(9, Draft.chain([1, 2, 3], "c"), past_length=5, dtype=torch.float32, device=torch.device("cpu"))
    assert inputs.attention_mask is None
    assert inputs.position_ids.tolist() == [[5, 6, 7, 8]]
    assert inputs.child(0, 1) == 1 and inputs.child(1, 2) == 2 and inputs.child(3, 4) is None and inputs.child(0, 2) is None


@pytest.mark.parametrize("parents", [[-1, 0, 1], []])
def test_a_tree_without_branches_is_laid_out_as_a_chain(parents: list[int]) -> None:
    # The policy often keeps one path of a tree, or nothing; neither needs a mask of ours.
    tokens = [1, 2, 3][: len(parents)]
    draft = Draft(np.array(tokens, dtype=np.int64), np.array(parents, dtype=np.int32), "t")
    inputs = build_step_inputs(9, draft, past_length=5, dtype=torch.float32, device=torch.device("cpu"))
    assert inputs.attention_mask is None and inputs.children is None
    assert inputs.position_ids.tolist() == [list(range(5, 6 + len(tokens)))]
    emitted, path = walk(inputs, {0: 1, 1: 2, 2: 3, 3: 4}.__getitem__, lambda token: False)
    assert emitted == [1, 2, 3, 4][: len(tokens) + 1] and path == list(range(len(tokens) + 1))
    branching = Draft(np.array([1, 2], dtype=np.int64), np.array([-1, -1], dtype=np.int32), "t")
    assert build_step_inputs(9, branching, 5, dtype=torch.float32, device=torch.device("cpu")).attention_mask is not None


def test_walk_follows_matching_children_and_emits_the_bonus() -> None:
    inputs = build_step_inputs(9, TREE, past_length=0, dtype=torch.float32, device=torch.device("cpu"))
    # The target picks: after root -> 4 (node 0, input 1); after input 1 -> 6 (input 3); after input 3 -> 8 (input 6);
    # after input 6 -> 42 (no child): emitted 4, 6, 8, 42.
    picks = {0: 4, 1: 6, 3: 8, 6: 42}
    emitted, path = walk(inputs, picks.__getitem__, lambda token: False)
    assert emitted == [4, 6, 8, 42]
    assert path == [0, 1, 3, 6]
    # Stopping on the second emitted token ends the walk there.
    emitted, path = walk(inputs, picks.__getitem__, lambda token: token == 6)
    assert emitted == [4, 6] and path == [0, 1]
    # A first pick that matches no child emits just that token.
    emitted, path = walk(inputs, {0: 77}.__getitem__, lambda token: False)
    assert emitted == [77] and path == [0]


def test_duplicate_sibling_is_never_reached() -> None:
    draft = Draft(np.array([4, 4, 5], dtype=np.int64), np.array([-1, -1, 1], dtype=np.int32), "dup")
    inputs = build_step_inputs(9, draft, past_length=0, dtype=torch.float32, device=torch.device("cpu"))
    assert inputs.child(0, 4) == 1


def test_limit_depth_drops_deep_nodes_and_remaps_parents() -> None:
    cut = TREE.limit_depth(2)
    assert cut.tokens.tolist() == [4, 5, 6, 7, 6]
    assert cut.parents.tolist() == [-1, -1, 0, 0, 1]
    assert TREE.limit_depth(1).tokens.tolist() == [4, 5]
    assert Draft.chain([1, 2, 3], "c").limit_depth(2).tokens.tolist() == [1, 2]
    assert TREE.depths.tolist() == [1, 1, 2, 2, 2, 3]


@pytest.mark.parametrize(
    "draft",
    [
        Draft(np.array([1.0, 2.0]), None, "float"),
        Draft(np.array([1, 200]), None, "range"),
        Draft(np.array([1, -1]), None, "negative"),
        Draft(np.array([1, 2]), np.array([-1, 1], dtype=np.int32), "self-parent"),
        Draft(np.array([1, 2]), np.array([-1], dtype=np.int32), "shape"),
        Draft(np.array([1, 2]), np.array([-2, 0], dtype=np.int32), "below -1"),
    ],
    ids=lambda d: d.source,
)
def test_malformed_drafts_are_refused(draft: Draft) -> None:
    with pytest.raises(ValueError):
        validate_draft(draft, vocab_size=100)


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flash_attention_3", "flex_attention", "paged_attention"])
def test_attention_without_4d_masks_is_refused_for_trees(implementation: str) -> None:
    fake = SimpleNamespace(config=SimpleNamespace(_attn_implementation=implementation))
    with pytest.raises(UnsupportedModelError, match="4-D mask"):
        check_tree_support(fake)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_tree_capable_attention_is_accepted(implementation: str) -> None:
    check_tree_support(SimpleNamespace(config=SimpleNamespace(_attn_implementation=implementation)))


def test_keep_cache_entries_gathers_the_accepted_path() -> None:
    cache = DynamicCache()
    keys = torch.arange(10, dtype=torch.float32).reshape(1, 1, 10, 1).repeat(1, 2, 1, 3)
    cache.update(keys, -keys, layer_idx=0)
    keep_cache_entries(cache, past_length=3, path=[0, 2, 5])
    layer = cache.layers[0]
    assert layer.keys[0, 0, :, 0].tolist() == [0, 1, 2, 3, 5, 8]
    assert layer.values[0, 1, :, 0].tolist() == [0, -1, -2, -3, -5, -8]
    keep_cache_entries(cache, past_length=2, path=[0, 1])
    assert cache.get_seq_length() == 4


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_tree_pass_equals_each_path_fed_alone(tiny_models, implementation: str) -> None:
    """The 4-D mask is honoured exactly: every node's logits equal a plain forward over its own path."""
    for family in ("llama", "qwen2", "gpt2"):
        model = tiny_models[(family, implementation)]
        prefix = torch.tensor([[3, 17, 42, 8, 60, 11]])
        with torch.no_grad():
            cache = DynamicCache(config=model.config)
            model(prefix[:, :-1], **cache_arguments(model, cache), use_cache=True)
            inputs = build_step_inputs(int(prefix[0, -1]), TREE, 5, dtype=torch.float32, device=torch.device("cpu"))
            tree_logits = model(
                input_ids=inputs.input_ids, position_ids=inputs.position_ids, attention_mask=inputs.attention_mask,
                **cache_arguments(model, cache), use_cache=True,
            ).logits[0]
            parents = TREE.parents.tolist()
            for node in range(len(TREE)):
                path = []
                walker = node
                while walker >= 0:
                    path.append(int(TREE.tokens[walker]))
                    walker = parents[walker]
                sequence = torch.cat([prefix, torch.tensor([path[::-1]])], dim=1)
                alone = model(sequence).logits[0, -1]
                torch.testing.assert_close(tree_logits[node + 1], alone, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(tree_logits[0], model(prefix).logits[0, -1], atol=1e-4, rtol=1e-4)


def test_a_draft_owns_its_geometry() -> None:
    probabilities = np.array([0.5, 0.4, 0.5, 0.2, 1.0, 0.5])
    tree = Draft(TREE.tokens, TREE.parents, "test", probabilities, 3)
    assert tree.depths.tolist() == [1, 1, 2, 2, 2, 3]
    assert tree.ranks.tolist() == [0, 1, 0, 1, 0, 0]
    # Path products by brute force: walk each node's ancestors.
    expected = []
    for node in range(len(tree)):
        product, at = 1.0, node
        while at >= 0:
            product *= probabilities[at]
            at = int(TREE.parents[at])
        expected.append(product)
    assert tree.path_probabilities.tolist() == pytest.approx(expected)
    assert tree.expected_tokens == pytest.approx(sum(expected))
    assert tree.path_probabilities is tree.path_probabilities  # computed once
    first = tree.first_path(8)
    assert first.is_chain and first.tokens.tolist() == [4, 6, 8] and first.probabilities.tolist() == [0.5, 0.5, 0.5]
    assert first.match_length == 3 and tree.first_path(2).tokens.tolist() == [4, 6]
    kept = tree.subset(np.array([1, 4]))
    assert kept.parents.tolist() == [-1, 0] and kept.tokens.tolist() == [5, 6] and kept.depths.tolist() == [1, 2]
    chain = Draft.chain([1, 2, 3], "c", [0.5, 0.5, 0.5])
    assert chain.depths.tolist() == [1, 2, 3] and chain.expected_tokens == pytest.approx(0.875)
    assert chain.is_path and not tree.is_path and Draft.empty().expected_tokens == 0.0
