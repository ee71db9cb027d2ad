"""From a transformers ``GenerationConfig`` to the engine's :class:`~sam_decoding.speculation.DecodingSettings`, as ``model.generate`` does it.

Which tokens come out depends on every choice ``model.generate`` makes before its loop: the
model's ``generation_config`` as the base, overridden by the caller's config and then by keyword
arguments; the length limits derived from the prompt; and the logits processors and sampling
warpers, in a fixed order. This module mirrors those choices with transformers' own public
processor classes, in the order of ``GenerationMixin._get_logits_processor`` (transformers 5.24):

1. processors: sequence bias, repetition penalty, no-repeat n-grams, bad words, minimum length,
   minimum new tokens, prefix constraints, forced BOS/EOS, invalid-value removal, exponential
   decay length penalty, suppressed tokens, tokens suppressed at the beginning;
2. the caller's own processors (one of a type already built replaces it, as in transformers);
3. when sampling, the warpers: temperature, top-h, top-k (transformers' default 50 when unset,
   0 disables it), top-p, min-p, typical-p, epsilon and eta cutoffs;
4. logit renormalization.

Options that need several sequences or extra model calls per token (beam search, contrastive
search, classifier-free guidance, watermarking, assisted decoding) are refused, not ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig
from transformers.generation import logits_process as lp
from transformers.generation.stopping_criteria import (
    MaxTimeCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)

from sam_decoding.speculation import DecodingSettings, StoppingCriterion

__all__ = ["decoding_settings", "eos_token_set", "logits_processors", "max_new_tokens_for", "resolve_generation_config"]

# transformers >= 5 leaves unset fields ``None`` in a GenerationConfig and fills them in inside
# ``generate`` (``GenerationConfig._get_default_generation_params``); 4.x stores these values
# in the config itself. These are the values generate falls back to for the fields read here.
_UNSET_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "num_beams": 1,
    "num_return_sequences": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "remove_invalid_values": False,
    "renormalize_logits": False,
}

# Keyword arguments of ``model.generate`` that are not GenerationConfig fields but that this
# engine honours (see :func:`split_generate_kwargs`).
_MODEL_KWARGS = ("attention_mask", "tokenizer", "prefix_allowed_tokens_fn")

# Config fields counted in tokens.
_LENGTH_FIELDS = ("max_new_tokens", "max_length", "min_new_tokens", "min_length")


def _field(config: GenerationConfig, name: str) -> Any:
    """``config.name``, or generate's default where the field is unset (or absent in this transformers version)."""
    value = getattr(config, name, None)
    return _UNSET_DEFAULTS.get(name) if value is None else value


def resolve_generation_config(
    model: torch.nn.Module, generation_config: GenerationConfig | None, overrides: Mapping[str, Any]
) -> tuple[GenerationConfig, dict[str, Any]]:
    """The config ``model.generate`` would decode with, and the keyword arguments that are not config fields.

    A copy of ``model.generation_config`` (or transformers' defaults), updated with the fields
    ``generation_config`` sets, then with ``overrides`` (``max_new_tokens=...``, ``top_p=...``).

    Raises:
        TypeError: ``generation_config`` is not a ``GenerationConfig``, or an override is neither a
            config field nor one of the ``model.generate`` arguments this engine takes
            (``attention_mask``, ``tokenizer``, ``prefix_allowed_tokens_fn``).
    """
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise TypeError(f"generation_config must be a transformers GenerationConfig, got {type(generation_config).__name__}")
    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if isinstance(base, GenerationConfig) else GenerationConfig()
    if generation_config is not None:
        # Only what the caller set differs from a fresh config; the rest stays the model's.
        config.update(**_set_fields(generation_config))
    for name in _LENGTH_FIELDS:
        # Checked before update(): transformers' own validation would fail on them with a bare comparison error.
        value = overrides.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    extra = {key: overrides[key] for key in _MODEL_KWARGS if key in overrides}
    # max_new_tokens=0 (return the prompt) is valid here but refused by transformers' validation,
    # so it is set directly and checked by max_new_tokens_for.
    fields = {key: value for key, value in overrides.items() if key not in extra and key != "max_new_tokens"}
    unused = config.update(**fields)
    if "max_new_tokens" in overrides:
        config.max_new_tokens = overrides["max_new_tokens"]
    if unused:
        names = ", ".join(sorted(unused))
        raise TypeError(
            f"generate() got unexpected keyword argument(s) {names}: neither GenerationConfig fields "
            f"nor one of {', '.join(_MODEL_KWARGS)}"
        )
    return config, extra


def _set_fields(config: GenerationConfig) -> dict[str, Any]:
    fields = config.to_diff_dict()
    for private in ("transformers_version", "_from_model_config", "_commit_hash", "_original_object_hash"):
        fields.pop(private, None)
    return fields


def check_supported(config: GenerationConfig) -> None:
    """Raise ``ValueError`` for options that need more than one sequence or extra model calls per token."""
    refused = {
        "num_beams": _field(config, "num_beams") not in (None, 1),
        "num_beam_groups": getattr(config, "num_beam_groups", None) not in (None, 1),
        "num_return_sequences": _field(config, "num_return_sequences") not in (None, 1),
        "penalty_alpha": getattr(config, "penalty_alpha", None) not in (None, 0),
        "guidance_scale": getattr(config, "guidance_scale", None) not in (None, 1),
        "watermarking_config": getattr(config, "watermarking_config", None) is not None,
        "prompt_lookup_num_tokens": getattr(config, "prompt_lookup_num_tokens", None) is not None,
        "constraints": bool(getattr(config, "constraints", None)),
        "force_words_ids": bool(getattr(config, "force_words_ids", None)),
    }
    names = [name for name, bad in refused.items() if bad]
    if names:
        raise ValueError(
            f"speculative generation decodes one sequence with one model call per step; unsupported: {', '.join(names)}"
        )


def check_values(config: GenerationConfig) -> None:
    """Raise ``ValueError`` for values ``model.generate`` would reject or misread (one line each)."""
    if _field(config, "do_sample"):
        temperature = _field(config, "temperature")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        top_k = _field(config, "top_k")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 disables it), got {top_k!r}")
        top_p = _field(config, "top_p")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        min_p = getattr(config, "min_p", None)
        if min_p is not None and not 0 <= min_p <= 1:
            raise ValueError(f"min_p must lie in [0, 1], got {min_p}")
    penalty = _field(config, "repetition_penalty")
    if not (isinstance(penalty, (int, float)) and penalty > 0):
        raise ValueError(f"repetition_penalty must be a positive float, got {penalty!r}")
    ngram = _field(config, "no_repeat_ngram_size")
    if isinstance(ngram, bool) or not isinstance(ngram, (int, np.integer)) or ngram < 0:
        raise ValueError(f"no_repeat_ngram_size must be an int >= 0, got {ngram!r}")


def max_new_tokens_for(config: GenerationConfig, prompt_length: int, model: torch.nn.Module) -> int:
    """Most new tokens (>= 0) allowed by ``max_new_tokens``, else ``max_length``, else generate's default of 20.

    As in ``model.generate`` (transformers >= 5): ``max_new_tokens`` wins; a ``max_length`` someone
    set counts the prompt; with neither, 20 new tokens, capped at the model's ``max_position_embeddings``.
    """
    max_new_tokens = getattr(config, "max_new_tokens", None)
    if max_new_tokens is not None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
            raise TypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        return int(max_new_tokens)
    max_length = getattr(config, "max_length", None)
    # transformers 4.x stores the default 20 in every config; 5.x leaves it unset. Either way only
    # a max_length someone set counts the prompt (transformers >= 5 semantics).
    if max_length is None or max_length == GenerationConfig().max_length:
        total = prompt_length + _UNSET_DEFAULTS["max_length"]
        positions = getattr(model.config, "max_position_embeddings", None)
        return max(0, (min(total, positions) if positions is not None else total) - prompt_length)
    if int(max_length) <= prompt_length:
        raise ValueError(
            f"max_length (={max_length}) leaves no room after the prompt of {prompt_length} tokens; set max_new_tokens instead"
        )
    return int(max_length) - prompt_length


def eos_token_set(eos_token_id: int | Iterable[int] | torch.Tensor | None) -> frozenset[int]:
    """Token ids that end generation, from an id, a list of ids, a tensor, or ``None`` (no EOS)."""
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, torch.Tensor):
        return frozenset(int(t) for t in eos_token_id.reshape(-1).tolist())
    if isinstance(eos_token_id, (int, np.integer)):
        return frozenset({int(eos_token_id)})
    return frozenset(int(t) for t in eos_token_id)


def logits_processors(
    config: GenerationConfig,
    prompt_length: int,
    max_length: int,
    *,
    extra: Iterable[Any] | None = None,
    prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]] | None = None,
    device: torch.device | str = "cpu",
) -> lp.LogitsProcessorList:
    """The processors and warpers ``model.generate`` applies for ``config``, in its order (see the module docstring).

    Args:
        config: A resolved config (:func:`resolve_generation_config`).
        prompt_length: Prompt length, in tokens.
        max_length: Prompt plus most new tokens, in tokens (for ``forced_eos_token_id``).
        extra: The caller's own processors, merged as transformers merges them.
        prefix_allowed_tokens_fn: As in ``model.generate``.
        device: Where the processors' constant tensors live (the model's device).
    """
    eos = sorted(eos_token_set(config.eos_token_id))
    eos_tensor = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
    processors = lp.LogitsProcessorList()
    if getattr(config, "sequence_bias", None) is not None:
        processors.append(lp.SequenceBiasLogitsProcessor(sequence_bias=config.sequence_bias))
    penalty = _field(config, "repetition_penalty")
    if penalty != 1.0:
        processors.append(lp.RepetitionPenaltyLogitsProcessor(penalty=penalty))
    ngram = _field(config, "no_repeat_ngram_size")
    if ngram > 0:
        processors.append(lp.NoRepeatNGramLogitsProcessor(ngram))
    if getattr(config, "bad_words_ids", None) is not None:
        processors.append(lp.NoBadWordsLogitsProcessor(config.bad_words_ids, eos_tensor))
    min_new_tokens = getattr(config, "min_new_tokens", None)
    # generate turns min_new_tokens into an absolute min_length before building its processors.
    min_length = prompt_length + min_new_tokens if min_new_tokens is not None else _field(config, "min_length")
    if eos_tensor is not None and min_length > 0:
        processors.append(lp.MinLengthLogitsProcessor(min_length, eos_tensor, device=device))
    if eos_tensor is not None and min_new_tokens is not None and min_new_tokens > 0:
        processors.append(lp.MinNewTokensLengthLogitsProcessor(prompt_length, min_new_tokens, eos_tensor, device=device))
    if prefix_allowed_tokens_fn is not None:
        processors.append(lp.PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn, 1))
    if getattr(config, "forced_bos_token_id", None) is not None:
        processors.append(lp.ForcedBOSTokenLogitsProcessor(config.forced_bos_token_id))
    if getattr(config, "forced_eos_token_id", None) is not None:
        processors.append(lp.ForcedEOSTokenLogitsProcessor(max_length, config.forced_eos_token_id, device=device))
    if _field(config, "remove_invalid_values") is True:
        processors.append(lp.InfNanRemoveLogitsProcessor())
    if getattr(config, "exponential_decay_length_penalty", None) is not None:
        processors.append(
            lp.ExponentialDecayLengthPenalty(config.exponential_decay_length_penalty, eos_tensor, prompt_length)
        )
    if getattr(config, "suppress_tokens", None) is not None:
        processors.append(lp.SuppressTokensLogitsProcessor(config.suppress_tokens, device=device))
    if getattr(config, "begin_suppress_tokens", None) is not None:
        begin = prompt_length if (prompt_length > 1 or getattr(config, "forced_bos_token_id", None) is None) else prompt_length + 1
        processors.append(lp.SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin, device=device))
    processors = _merge(processors, list(extra or []))
    if _field(config, "do_sample"):
        processors.extend(_warpers(config))
    if _field(config, "renormalize_logits") is True:
        processors.append(lp.LogitNormalization())
    return processors


def _warpers(config: GenerationConfig) -> list[Any]:
    warpers: list[Any] = []
    temperature = _field(config, "temperature")
    if temperature != 1.0:
        warpers.append(lp.TemperatureLogitsWarper(temperature))
    top_h = getattr(config, "top_h", None)
    if top_h is not None:
        warpers.append(lp.TopHLogitsWarper(top_h=top_h))
    top_k = _field(config, "top_k")
    if top_k != 0:
        warpers.append(lp.TopKLogitsWarper(top_k=int(top_k), min_tokens_to_keep=1))
    top_p = _field(config, "top_p")
    if top_p < 1.0:
        warpers.append(lp.TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    min_p = getattr(config, "min_p", None)
    if min_p is not None:
        # After temperature, as transformers orders it (llama.cpp's convention).
        warpers.append(lp.MinPLogitsWarper(min_p=min_p, min_tokens_to_keep=1))
    typical_p = _field(config, "typical_p")
    if typical_p < 1.0:
        warpers.append(lp.TypicalLogitsWarper(mass=typical_p, min_tokens_to_keep=1))
    epsilon = _field(config, "epsilon_cutoff")
    if 0.0 < epsilon < 1.0:
        warpers.append(lp.EpsilonLogitsWarper(epsilon=epsilon, min_tokens_to_keep=1))
    eta = _field(config, "eta_cutoff")
    if 0.0 < eta < 1.0:
        warpers.append(lp.EtaLogitsWarper(epsilon=eta, min_tokens_to_keep=1))
    return warpers


def _merge(built: lp.LogitsProcessorList, custom: list[Any]) -> lp.LogitsProcessorList:
    # transformers >= 4.50: a caller's processor of a type generate also built takes that one's place;
    # the caller's others follow the built ones.
    if not custom:
        return built
    merged = lp.LogitsProcessorList()
    for default in built:
        merged.append(next((c for c in custom if type(c) is type(default)), default))
    merged.extend(c for c in custom if not any(c is m for m in merged))
    return merged


def stopping_hook(
    config: GenerationConfig, tokenizer: Any, criteria: StoppingCriterion | None
) -> StoppingCriterion | None:
    """The caller's stopping criteria plus ``stop_strings`` (needs ``tokenizer``) and ``max_time`` (seconds) from ``config``."""
    built: list[Any] = []
    if getattr(config, "max_time", None) is not None:
        built.append(MaxTimeCriteria(max_time=config.max_time))
    stop_strings = getattr(config, "stop_strings", None)
    if stop_strings is not None:
        if tokenizer is None:
            raise ValueError("stop_strings needs the tokenizer: pass tokenizer=... as with model.generate")
        built.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
    if not built:
        return criteria
    hooks = StoppingCriteriaList(built)
    if criteria is not None:
        hooks.extend(criteria if isinstance(criteria, list) else [criteria])
    return hooks


def decoding_settings(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    config: GenerationConfig,
    extra: Mapping[str, Any],
    *,
    logits_processor: Iterable[Any] | None,
    stopping_criteria: StoppingCriterion | None,
    generator: torch.Generator | None,
    streamer: Any | None,
) -> DecodingSettings:
    """Everything the loop needs for one call, resolved from a config as ``model.generate`` resolves it."""
    check_supported(config)
    check_values(config)
    attention_mask = extra.get("attention_mask")
    if attention_mask is not None and not bool((torch.as_tensor(attention_mask) == 1).all()):
        raise ValueError("speculative generation does not support padded prompts (attention_mask with zeros)")
    prompt_length = int(prompt.shape[1])
    max_new_tokens = max_new_tokens_for(config, prompt_length, model)
    device = next(model.parameters()).device
    processors = logits_processors(
        config,
        prompt_length,
        prompt_length + max_new_tokens,
        extra=logits_processor,
        prefix_allowed_tokens_fn=extra.get("prefix_allowed_tokens_fn"),
        device=device,
    )
    return DecodingSettings(
        max_new_tokens=max_new_tokens,
        eos=eos_token_set(config.eos_token_id),
        do_sample=bool(_field(config, "do_sample")),
        processors=processors,
        generator=generator,
        stopping_criteria=stopping_hook(config, extra.get("tokenizer"), stopping_criteria),
        streamer=streamer,
    )
