"""One verification step: lay a draft out for a single forward pass, pick the tokens the target emits, prune the cache.

The forward pass goes through the model's public ``forward`` only. A chain draft is fed as plain
causal input. A tree draft is fed with a 4-D additive attention mask in which every node sees the
whole cached prefix, the context's last token and its own ancestors, and with position ids
``prefix_length + depth``, so each node is computed exactly as if its path alone had been fed.
Transformers passes a 4-D mask through unchanged to the ``eager`` and ``sdpa`` attention
functions (``masking_utils._preprocess_mask_arguments``); other implementations (flash attention,
flex attention, paged kernels) build their own masks or ignore ours, so trees are refused there.

Acceptance walks from the root: pick the target's token at the current node (argmax, or a sample
from the processed distribution), emit it, and descend into the child carrying that token if
there is one. Drafts are fixed before the walk, so every emitted token has exactly the
distribution ordinary decoding would give it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sam_decoding.drafters.base import Draft

# Attention implementations that add a given 4-D float mask to the attention scores as-is.
TREE_CAPABLE_ATTENTION = frozenset({"eager", "sdpa"})


class UnsupportedModelError(ValueError):
    """The model cannot be verified losslessly by this engine (attention implementation or cache layout)."""


def attention_implementation(model: torch.nn.Module) -> str:
    """The attention implementation the model's config selects (e.g. ``"sdpa"``)."""
    config = model.config
    return str(getattr(config, "_attn_implementation", None) or getattr(config, "attn_implementation", "eager"))


def check_tree_support(model: torch.nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` unless ``model`` honours a custom 4-D attention mask exactly."""
    implementation = attention_implementation(model)
    if implementation not in TREE_CAPABLE_ATTENTION:
        raise UnsupportedModelError(
            f"tree drafts need an attention implementation that takes a custom 4-D mask "
            f"({', '.join(sorted(TREE_CAPABLE_ATTENTION))}); this model uses {implementation!r}. "
            f"Load it with attn_implementation='sdpa' or use a chain-only drafter "
            f"(e.g. SamDrafter(use_tree=False, fallback=PromptLookupDrafter()))."
        )


def validate_draft(draft: Draft, vocab_size: int) -> None:
    """Raise ``ValueError`` if ``draft`` is malformed (dtype, shape, token range, parent order)."""
    tokens = draft.tokens
    if not isinstance(tokens, np.ndarray) or tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise ValueError(f"draft tokens must be a 1-D integer numpy array, got {type(tokens).__name__}")
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"draft tokens must lie in [0, {vocab_size}) (source {draft.source!r})")
    if draft.parents is not None:
        parents = draft.parents
        if not isinstance(parents, np.ndarray) or parents.shape != tokens.shape:
            raise ValueError("draft parents must be a numpy array shaped like its tokens")
        if len(parents) and (
            np.any(parents < -1) or np.any(parents >= np.arange(len(parents)))
        ):
            raise ValueError("draft parents must satisfy -1 <= parents[i] < i")
    if draft.probabilities is not None:
        probabilities = draft.probabilities
        if not isinstance(probabilities, np.ndarray) or probabilities.shape != tokens.shape:
            raise ValueError(f"draft probabilities must be a numpy array shaped like its tokens (source {draft.source!r})")
        if len(probabilities) and not (np.all(probabilities >= 0) and np.all(probabilities <= 1)):
            raise ValueError(f"draft probabilities must lie in [0, 1] (source {draft.source!r})")


@dataclass
class StepInputs:
    """Model inputs for one verification pass and the tree's child index.

    Attributes:
        input_ids: ``[1, q]``: the context's last token (input index 0) then the draft nodes (node i at index i + 1).
        position_ids: ``[1, q]`` absolute positions (prefix length + depth).
        attention_mask: ``None`` for a chain (plain causal), else an additive float mask ``[1, 1, q, past + q]``.
        children: For trees, ``(input index, token) -> input index`` of the child carrying that token;
            ``None`` for a chain (the child of index i is i + 1).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    children: dict[tuple[int, int], int] | None
    chain_tokens: list[int] | None = None

    def child(self, node: int, token: int) -> int | None:
        """Input index of the draft child of input ``node`` that carries ``token``, or ``None``."""
        if self.children is not None:
            return self.children.get((node, token))
        tokens = self.chain_tokens
        if tokens is None:
            tokens = self.chain_tokens = self.input_ids[0].tolist()
        child = node + 1
        return child if child < len(tokens) and tokens[child] == token else None


def build_step_inputs(
    last_token: int, draft: Draft, past_length: int, *, dtype: torch.dtype, device: torch.device
) -> StepInputs:
    """Lay out ``[last_token] + draft`` for one forward pass over a cache of ``past_length`` tokens."""
    q = len(draft) + 1
    ids = np.empty(q, dtype=np.int64)
    ids[0] = last_token
    ids[1:] = draft.tokens
    input_ids = torch.from_numpy(ids).to(device).unsqueeze(0)
    if draft.is_path:
        # Laid out as a chain: the model's own causal mask instead of building one of ours.
        position_ids = torch.arange(past_length, past_length + q, device=device).unsqueeze(0)
        return StepInputs(input_ids, position_ids, None, None, ids.tolist())

    parents = draft.parents.tolist()
    tokens = draft.tokens.tolist()
    # Row i of `visible` marks input i's ancestors and itself among the q fed inputs.
    visible = np.zeros((q, q), dtype=bool)
    visible[0, 0] = True
    depth = np.zeros(q, dtype=np.int64)
    children: dict[tuple[int, int], int] = {}
    for node, (parent, token) in enumerate(zip(parents, tokens), start=1):
        parent_input = parent + 1  # parent -1 (the context's last token) is input 0
        visible[node] = visible[parent_input]
        visible[node, node] = True
        depth[node] = depth[parent_input] + 1
        children.setdefault((parent_input, token), node)
    mask = torch.zeros((1, 1, q, past_length + q), dtype=dtype, device=device)
    blocked = torch.from_numpy(~visible).to(device)
    mask[0, 0, :, past_length:].masked_fill_(blocked, torch.finfo(dtype).min)
    position_ids = torch.from_numpy(depth + past_length).to(device).unsqueeze(0)
    return StepInputs(input_ids, position_ids, mask, children)


def walk(
    inputs: StepInputs,
    choose: Callable[[int], int],
    stop: Callable[[int], bool],
) -> tuple[list[int], list[int]]:
    """Emit tokens from the root down the draft while the target's choice matches a draft child.

    ``choose(i)`` returns the target's token after input index ``i``; ``stop(token)`` is called on
    every emitted token (after it is emitted) and ends the walk when true.

    Returns:
        ``(emitted, path)``: the emitted tokens, and ``path[j]`` = the input index whose logits chose
        ``emitted[j]`` (``path[0] == 0``). The keys/values to keep are those of ``path``.
    """
    emitted: list[int] = []
    path: list[int] = []
    node: int | None = 0
    while node is not None:
        token = choose(node)
        emitted.append(token)
        path.append(node)
        if stop(token):
            break
        node = inputs.child(node, token)
    return emitted, path
