"""``generate``: speculative decoding with the interface of ``model.generate``, exactly as the model alone would decode.

This module checks the prompt, resolves the decoding options as ``model.generate`` does (with
:mod:`sam_decoding.generation_config`) into :class:`~sam_decoding.speculation.DecodingSettings`,
and picks the drafter and verification policy; the loop itself lives in :mod:`sam_decoding.speculation`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig

from sam_decoding.drafters.base import Drafter
from sam_decoding.drafters.sam import SamDrafter
from sam_decoding.drafters.token_recycling import TokenRecyclingDrafter
from sam_decoding.generation_config import decoding_settings, resolve_generation_config
from sam_decoding.speculation import DecodingSettings, SpeculativeRun, StoppingCriterion
from sam_decoding.verification import check_tree_support
from sam_decoding.stats import GenerationResult, GenerationStats

__all__ = ["GenerationResult", "GenerationStats", "default_drafter", "generate"]

#: ``policy="cost"`` (the default): the model's shared cost-aware policy (see :mod:`sam_decoding.policy`).
COST_POLICY = "cost"
#: ``policy="all"``: every drafted node is verified.
ALL_POLICY = "all"
#: Kept for code written against the first release's name of the default.
AUTO_POLICY = COST_POLICY
#: Old policy values, accepted for one release with a DeprecationWarning.
_OLD_POLICIES = {"auto": COST_POLICY, None: ALL_POLICY}


def default_drafter(device: torch.device | str | None = None) -> SamDrafter:
    """The engine's default drafter for a model on ``device``: SAM retrieval over the text so far.

    On a GPU it falls back to Token Recycling where nothing matches (verifying more tokens costs a GPU
    little, and Token Recycling's extra drafts paid there: 2.0x vs 1.7x on HumanEval); on a CPU it
    has no fallback, which measured faster there (see the README's results).
    """
    if device is not None and torch.device(device).type == "cuda":
        return SamDrafter(None, fallback=TokenRecyclingDrafter())
    return SamDrafter(None)


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


def generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor | np.ndarray | list[int],
    generation_config: GenerationConfig | None = None,
    *,
    drafter: Drafter | None = None,
    policy: Any = AUTO_POLICY,
    generator: torch.Generator | None = None,
    streamer: Any | None = None,
    logits_processor: Iterable[Any] | None = None,
    stopping_criteria: StoppingCriterion | None = None,
    **kwargs: Any,
) -> GenerationResult:
    """Generate with speculative decoding, exactly as ``model.generate`` would with the same arguments.

    The decoding options are resolved as ``model.generate`` resolves them: a copy of
    ``model.generation_config``, updated with the fields ``generation_config`` sets, then with
    ``kwargs``; the same logits processors and sampling warpers are applied in the same order
    (see :mod:`sam_decoding.generation_config`), including transformers' default ``top_k=50``
    when sampling (``top_k=0`` disables it).

    Args:
        model: A Hugging Face causal LM (``eager`` or ``sdpa`` attention for tree drafts).
        input_ids: The prompt, ``[1, length]`` or ``[length]`` token ids (or a tokenizer's
            ``BatchEncoding``). Batch size must be 1.
        generation_config: A ``transformers.GenerationConfig`` whose set fields override the model's.
        drafter: Proposes the drafts; default: :func:`default_drafter` (a new one per call; pass your
            own instance to keep Token Recycling's table across requests).
        policy: Which draft nodes each step verifies. ``"cost"`` (default): the model's shared
            :class:`~sam_decoding.policy.CostAwarePolicy`, which keeps the subtree that maximizes
            expected tokens per second under this hardware's measured verification cost; a
            ``CostAwarePolicy`` of your own; or ``"all"`` to verify every drafted node (fixed-size
            drafting). The first release's ``"auto"`` and ``None`` still work, with a DeprecationWarning.
        generator: Random source for sampling (for reproducible runs); ``None``: torch's global one.
        streamer: A transformers streamer; receives the prompt, then each step's new tokens, then ``end()``.
        logits_processor: Extra transformers logits processors, merged into the built ones as
            ``model.generate`` merges them (after the processors, before the sampling warpers) and
            applied to each position's scores with the sequence up to that position.
        stopping_criteria: Called after every emitted token on the growing sequence (e.g. a
            ``StoppingCriteriaList``); generation ends after the token for which it returns true.
        kwargs: ``GenerationConfig`` fields, as for ``model.generate``: ``max_new_tokens`` (tokens,
            >= 0; default: ``max_length``, else 20), ``max_length`` (tokens, prompt included),
            ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``,
            ``no_repeat_ngram_size``, ``eos_token_id`` (an id or list of ids; ``[]`` or ``None``: never
            stop early), ``min_new_tokens``, ``bad_words_ids``, ``stop_strings``, ``max_time``
            (seconds), ...; and the ``model.generate`` arguments ``attention_mask`` (all ones),
            ``tokenizer`` (for ``stop_strings``) and ``prefix_allowed_tokens_fn``. Anything else is a
            ``TypeError``; beam search, contrastive search, guidance and watermarking are refused.

    Returns:
        The prompt plus generated tokens and a :class:`GenerationStats`.
    """
    prompt = _as_prompt(input_ids)
    config, extra = resolve_generation_config(model, generation_config, kwargs)
    settings = decoding_settings(
        model,
        prompt,
        config,
        extra,
        logits_processor=logits_processor,
        stopping_criteria=stopping_criteria,
        generator=generator,
        streamer=streamer,
    )
    if streamer is not None:
        streamer.put(prompt.cpu())
    return speculate(model, prompt, settings, drafter, policy)


def speculate(
    model: torch.nn.Module, prompt: torch.Tensor, settings: DecodingSettings, drafter: Drafter | None, policy: Any
) -> GenerationResult:
    """Run the speculative loop on a checked ``[1, length]`` prompt (shared by :func:`generate` and ``custom_generate``)."""
    if drafter is None:
        drafter = default_drafter(next(model.parameters()).device)
    elif not isinstance(drafter, Drafter):
        raise TypeError(f"drafter must be a sam_decoding Drafter, got {type(drafter).__name__}")
    check_corpus_fits_model(drafter, model)
    if drafter.proposes_trees:
        check_tree_support(model)
    # Inference mode, not just no_grad: tensors skip autograd's version tracking, which made the loop
    # about 3% slower than transformers' generate on a 2-core CPU (bench/experiments/engine_overhead.py).
    with torch.inference_mode():
        result = SpeculativeRun(model, prompt, settings, drafter, resolve_policy(policy, model)).run()
    drafter.finish()
    # Copied outside inference mode, the output is an ordinary tensor (usable with autograd later),
    # like model.generate's.
    return GenerationResult(result.sequences.clone(), result.stats)


def check_corpus_fits_model(drafter: Drafter, model: torch.nn.Module) -> None:
    """Refuse, in one line, a corpus holding token ids the model does not have: it was built with
    another model's tokenizer. (A corpus with a tokenizer fingerprint is checked against the model's
    tokenizer where that is known: the CLI, vLLM, or ``SamDrafter(tokenizer_fingerprint=...)``.)"""
    corpus = getattr(drafter, "corpus", None)
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if corpus is None or not isinstance(vocab_size, int):
        return
    if corpus.vocab_bound > vocab_size:
        raise ValueError(
            f"the corpus holds token id {corpus.vocab_bound - 1}, but the model's vocabulary has {vocab_size} tokens: "
            f"it was built with another tokenizer ({corpus.tokenizer_fingerprint or 'unrecorded'}); "
            "rebuild it with this model's tokenizer (sam-decoding build --model ...)"
        )


def resolve_policy(policy: Any, model: torch.nn.Module) -> Any:
    """The verification policy object for ``policy``: ``"cost"``, ``"all"`` or a policy instance
    (``None`` for "verify every node")."""
    from sam_decoding.policy import CostAwarePolicy

    if policy is None or (isinstance(policy, str) and policy in _OLD_POLICIES):
        new = _OLD_POLICIES[policy]
        warnings.warn(f"policy={policy!r} is renamed policy={new!r}; the old value will be removed in the next release",
                      DeprecationWarning, stacklevel=4)
        policy = new
    if isinstance(policy, str):
        if policy == ALL_POLICY:
            return None
        if policy != COST_POLICY:
            raise ValueError(f"policy must be 'cost', 'all' or a CostAwarePolicy, got {policy!r}")
        return CostAwarePolicy.shared(model)
    if not isinstance(policy, CostAwarePolicy):
        raise TypeError(f"policy must be 'cost', 'all' or a CostAwarePolicy, got {type(policy).__name__}")
    return policy
