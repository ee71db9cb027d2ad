"""``generate``: speculative decoding with the interface of ``model.generate``, exactly as the model alone would decode.

This module resolves what the caller asked for (prompt, stopping, sampling, processors, drafter,
verification policy) into :class:`~sam_decoding.speculation.DecodingSettings`; the loop itself
lives in :mod:`sam_decoding.speculation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from sam_decoding.drafters.base import Drafter
from sam_decoding.drafters.sam import SamDrafter
from sam_decoding.drafters.token_recycling import TokenRecyclingDrafter
from sam_decoding.verification import check_tree_support
from sam_decoding.speculation import DecodingSettings, SpeculativeRun, StoppingCriterion
from sam_decoding.stats import GenerationResult, GenerationStats

__all__ = ["GenerationResult", "GenerationStats", "default_drafter", "generate"]

#: ``policy="auto"``: the model's shared cost-aware policy (see :mod:`sam_decoding.policy`).
AUTO_POLICY = "auto"


def default_drafter() -> SamDrafter:
    """The engine's default: dynamic SAM retrieval with a Token Recycling fallback (no corpus)."""
    return SamDrafter(None, fallback=TokenRecyclingDrafter())


def _eos_set(eos_token_id: int | Iterable[int] | torch.Tensor | None, model: torch.nn.Module) -> frozenset[int]:
    if eos_token_id is None:
        config = getattr(model, "generation_config", None)
        eos_token_id = getattr(config, "eos_token_id", None)
        if eos_token_id is None:
            return frozenset()
    if isinstance(eos_token_id, torch.Tensor):
        return frozenset(int(t) for t in eos_token_id.reshape(-1).tolist())
    if isinstance(eos_token_id, (int, np.integer)):
        return frozenset({int(eos_token_id)})
    return frozenset(int(t) for t in eos_token_id)


def _as_prompt(input_ids: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
    if isinstance(input_ids, Mapping):
        # A tokenizer's BatchEncoding (e.g. from apply_chat_template(..., return_dict=True)).
        if "input_ids" not in input_ids:
            raise TypeError("input_ids is a mapping without an 'input_ids' entry")
        input_ids = input_ids["input_ids"]
    if not isinstance(input_ids, torch.Tensor):
        array = np.asarray(input_ids)
        if array.dtype.kind not in "iub":
            raise TypeError(f"input_ids must hold integer token ids, got {array.dtype}")
        input_ids = torch.as_tensor(array)
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [1, length] (or [length]), got shape {tuple(input_ids.shape)}")
    if input_ids.shape[0] != 1:
        raise ValueError(
            f"speculative generation supports batch size 1 only, got input_ids of batch size {input_ids.shape[0]}; "
            "call generate once per sequence"
        )
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: the prompt needs at least one token")
    return input_ids.long()


def _check_sampling(do_sample: bool, temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not do_sample:
        return
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")


def _sampling_warpers(temperature: float, top_k: int | None, top_p: float | None) -> LogitsProcessorList:
    # The same warpers, in the same order, that transformers' generate applies for sampling, so the
    # processed distribution is ordinary sampling's by construction.
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return warpers


def generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor | np.ndarray | list[int],
    *,
    max_new_tokens: int,
    drafter: Drafter | None = None,
    eos_token_id: int | Iterable[int] | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    streamer: Any | None = None,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriterion | None = None,
    policy: Any = AUTO_POLICY,
) -> GenerationResult:
    """Generate up to ``max_new_tokens`` tokens with speculative decoding, exactly as the model alone would.

    Args:
        model: A Hugging Face causal LM (``eager`` or ``sdpa`` attention for tree drafts).
        input_ids: The prompt, ``[1, length]`` or ``[length]`` token ids. Batch size must be 1.
        max_new_tokens: Most tokens to generate (>= 0).
        drafter: Proposes the drafts; default: :func:`default_drafter` (a new one per call; pass your
            own instance to keep Token Recycling's table across requests).
        eos_token_id: Token id(s) that end generation (emitted, then stop); ``None``: the model's
            ``generation_config.eos_token_id``; an empty list: never stop early.
        do_sample: Sample instead of greedy argmax.
        temperature, top_k, top_p: Sampling parameters, with transformers' meaning and order.
        generator: Random source for sampling (for reproducible runs).
        streamer: A transformers streamer; receives the prompt, then each step's new tokens, then ``end()``.
        logits_processor: Extra transformers logits processors, applied before the sampling warpers
            to each position's scores with the sequence up to that position (as in ``model.generate``).
        stopping_criteria: Called after every emitted token on the growing sequence (e.g. a
            ``StoppingCriteriaList``); generation ends after the token for which it returns true.
        policy: Which draft nodes each step verifies. ``"auto"`` (default): the model's shared
            :class:`~sam_decoding.policy.CostAwarePolicy`, which keeps the subtree that maximizes
            expected tokens per second under this hardware's measured verification cost; a
            ``CostAwarePolicy`` of your own; or ``None`` to verify every drafted node (fixed-size drafting).

    Returns:
        The prompt plus generated tokens and a :class:`GenerationStats`.
    """
    prompt = _as_prompt(input_ids)
    _check_max_new_tokens(max_new_tokens)
    _check_sampling(do_sample, temperature, top_k, top_p)
    if streamer is not None:
        streamer.put(prompt.cpu())
    processors = LogitsProcessorList(logits_processor or [])
    if do_sample:
        processors.extend(_sampling_warpers(temperature, top_k, top_p))
    settings = DecodingSettings(
        max_new_tokens=int(max_new_tokens),
        eos=_eos_set(eos_token_id, model),
        do_sample=do_sample,
        processors=processors,
        generator=generator,
        stopping_criteria=stopping_criteria,
        streamer=streamer,
    )
    return speculate(model, prompt, settings, drafter, policy)


def speculate(
    model: torch.nn.Module, prompt: torch.Tensor, settings: DecodingSettings, drafter: Drafter | None, policy: Any
) -> GenerationResult:
    """Run the speculative loop on a checked ``[1, length]`` prompt (shared by :func:`generate` and ``custom_generate``)."""
    if drafter is None:
        drafter = default_drafter()
    elif not isinstance(drafter, Drafter):
        raise TypeError(f"drafter must be a sam_decoding Drafter, got {type(drafter).__name__}")
    if drafter.proposes_trees:
        check_tree_support(model)
    with torch.no_grad():
        return SpeculativeRun(model, prompt, settings, drafter, resolve_policy(policy, model)).run()


def resolve_policy(policy: Any, model: torch.nn.Module) -> Any:
    """The verification policy object for ``policy`` (``"auto"``, ``None`` or a policy instance)."""
    from sam_decoding.policy import CostAwarePolicy

    if policy is None:
        return None
    if isinstance(policy, str):
        if policy != AUTO_POLICY:
            raise ValueError(f"policy must be 'auto', None or a CostAwarePolicy, got {policy!r}")
        return CostAwarePolicy.shared(model)
    if not isinstance(policy, CostAwarePolicy):
        raise TypeError(f"policy must be 'auto', None or a CostAwarePolicy, got {type(policy).__name__}")
    return policy


def _check_max_new_tokens(max_new_tokens: Any) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise TypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
