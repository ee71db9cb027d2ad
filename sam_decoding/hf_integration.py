"""The Hugging Face way in: ``model.generate(input_ids, custom_generate=custom_generate, drafter=...)``.

transformers (>= 4.57.1) prepares the generation config, logits processors (including the sampling
warpers) and stopping criteria (max length, EOS, stop strings, ...) and then calls a callable
``custom_generate`` as ``custom_generate(model, input_ids, logits_processor=..., stopping_criteria=...,
generation_config=..., **model_kwargs)``; keyword arguments of ``generate`` that only this
callable declares (``drafter``, ``generator``, ``sam_streamer``, ``stats_callback``) are passed
through. This module runs the speculative loop with exactly those processors and criteria, so
``model.generate`` with and without ``custom_generate`` gives the same tokens.

transformers hands a callable neither the ``streamer`` argument of ``generate`` (it only feeds it
the prompt) nor any cache it prepared; pass the streamer as ``sam_streamer`` to get the new tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import LogitsProcessorList

from sam_decoding.drafters.base import Drafter
from sam_decoding.generation import AUTO_POLICY, GenerationStats, speculate
from sam_decoding.generation_config import eos_token_set
from sam_decoding.speculation import DecodingSettings


def custom_generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    logits_processor: Any = None,
    stopping_criteria: Any = None,
    generation_config: Any = None,
    synced_gpus: bool = False,
    streamer: Any = None,
    drafter: Drafter | None = None,
    generator: torch.Generator | None = None,
    sam_streamer: Any = None,
    stats_callback: Callable[[GenerationStats], None] | None = None,
    policy: Any = AUTO_POLICY,
    **model_kwargs: Any,
) -> torch.Tensor:
    """Speculative decoding as a ``custom_generate`` callable for ``model.generate``.

    Args:
        model, input_ids, logits_processor, stopping_criteria, generation_config: As prepared by
            ``model.generate``; ``max_new_tokens``/``max_length``, EOS, ``do_sample`` and the sampling
            parameters come from there.
        synced_gpus: Must be false (multi-GPU lockstep generation is not supported).
        streamer: A streamer, if a future transformers passes one; else use ``sam_streamer``.
        drafter: The drafter (default: SAM dynamic retrieval with Token Recycling fallback).
        generator: Random source for sampling.
        sam_streamer: A streamer to receive each step's new tokens and ``end()`` (the prompt was
            already sent by ``model.generate`` to its own ``streamer`` argument, not to this one).
        stats_callback: Called once with the call's :class:`~sam_decoding.GenerationStats`.
        policy: The verification policy, as for :func:`~sam_decoding.generate` (default ``"cost"``).
        model_kwargs: ``attention_mask`` (must be all ones: no padding), cache and other inputs
            prepared by transformers; the loop builds its own cache.

    Returns:
        int64 tensor ``[1, prompt + new tokens]``, like ``model.generate``.
    """
    if synced_gpus:
        raise ValueError("sam_decoding's custom_generate does not support synced_gpus")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(
            f"speculative generation supports batch size 1 only, got input_ids of shape {tuple(input_ids.shape)}"
        )
    attention_mask = model_kwargs.get("attention_mask")
    if attention_mask is not None and not bool((attention_mask == 1).all()):
        raise ValueError("sam_decoding's custom_generate does not support padded prompts (attention_mask with zeros)")
    if generation_config is None:
        generation_config = model.generation_config
    if getattr(generation_config, "num_beams", 1) not in (None, 1):
        raise ValueError("sam_decoding's custom_generate does not support beam search (num_beams > 1)")
    if getattr(generation_config, "num_return_sequences", 1) not in (None, 1):
        raise ValueError("sam_decoding's custom_generate supports num_return_sequences=1 only")
    if getattr(generation_config, "return_dict_in_generate", False):
        raise ValueError("sam_decoding's custom_generate returns the sequences tensor only (return_dict_in_generate=False)")
    max_new_tokens = max(0, int(generation_config.max_length) - int(input_ids.shape[1]))
    eos = getattr(generation_config, "_eos_token_tensor", None)
    if eos is None:
        eos = generation_config.eos_token_id
    out_streamer = sam_streamer if sam_streamer is not None else streamer
    settings = DecodingSettings(
        max_new_tokens=max_new_tokens,
        eos=eos_token_set(eos),
        do_sample=bool(generation_config.do_sample),
        # The prepared logits_processor already holds the temperature/top-k/top-p warpers.
        processors=logits_processor or LogitsProcessorList(),
        generator=generator,
        stopping_criteria=stopping_criteria if stopping_criteria else None,
        streamer=out_streamer,
    )
    result = speculate(model, input_ids, settings, drafter, policy)
    if stats_callback is not None:
        stats_callback(result.stats)
    return result.sequences
