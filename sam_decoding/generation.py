"""The speculative generate loop: draft, verify in one forward pass, keep what the model would have produced.

Each step feeds the context's last token followed by the drafter's proposal (a chain or a tree)
through the target model once, walks the draft from the root while the target's own choice
(argmax, or a sample from its processed distribution) matches a draft child, emits those tokens
plus the target's choice at the first mismatch, and keeps only the accepted path in the KV cache.
The emitted sequence is exactly what ordinary decoding would give (greedy: token for token, up to
floating-point ties; sampling: the same distribution).

The cache always holds every context token except the last one, which is re-fed at the start of
the next step; so a step of ``k`` draft tokens is a forward pass of ``k + 1`` tokens.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from sam_decoding.drafters.base import Draft, Drafter, Verified
from sam_decoding.drafters.sam import SamDrafter
from sam_decoding.drafters.token_recycling import TokenRecyclingDrafter
from sam_decoding.kv_cache import cache_arguments, check_cache_layout, keep_cache_entries
from sam_decoding.verification import (
    TREE_CAPABLE_ATTENTION,
    attention_implementation,
    build_step_inputs,
    check_tree_support,
    limit_depth,
    validate_draft,
    walk,
)

# A hook called on the growing sequence after every emitted token, like transformers'
# StoppingCriteriaList: (input_ids [1, length], scores [1, vocab]) -> bool tensor [1].
StoppingCriterion = Callable[[torch.Tensor, torch.Tensor], Any]


@dataclass
class GenerationStats:
    """Counters and timings of one :func:`generate` call.

    Attributes:
        prompt_tokens: Prompt length, in tokens.
        new_tokens: Tokens generated (emitted after the prompt).
        steps: Verification forward passes (one per step; the prefill is not a step).
        drafted_tokens: Draft tokens fed to the target across all steps.
        accepted_tokens: Draft tokens that were emitted (``new_tokens`` minus one target-chosen token per step).
        drafts_by_source: Steps whose draft came from each source (``"dynamic"``, ``"static"``, ...).
        drafted_by_source: Draft tokens fed, per source.
        accepted_by_source: Draft tokens emitted, per source.
        prefill_seconds: Wall time of the prompt's forward pass, in seconds.
        draft_seconds: Wall time spent in the drafter (propose + accept), in seconds.
        verify_seconds: Wall time of the verification passes, acceptance walks and cache pruning, in seconds.
        total_seconds: Wall time of the whole call, in seconds.
    """

    prompt_tokens: int = 0
    new_tokens: int = 0
    steps: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    drafts_by_source: dict[str, int] = field(default_factory=dict)
    drafted_by_source: dict[str, int] = field(default_factory=dict)
    accepted_by_source: dict[str, int] = field(default_factory=dict)
    prefill_seconds: float = 0.0
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def mean_accepted_tokens(self) -> float:
        """MAT: tokens emitted per verification step (accepted draft tokens + the target's own token)."""
        return self.new_tokens / self.steps if self.steps else 0.0

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of wall time, prefill included."""
        return self.new_tokens / self.total_seconds if self.total_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """All counters, timings and derived rates as plain JSON-friendly values."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["mean_accepted_tokens"] = self.mean_accepted_tokens
        data["tokens_per_second"] = self.tokens_per_second
        return data


@dataclass
class GenerationResult:
    """Output of :func:`generate`.

    Attributes:
        sequences: int64 tensor ``[1, prompt_tokens + new_tokens]``: the prompt followed by the generated tokens.
        stats: Counters and timings of the call.
    """

    sequences: torch.Tensor
    stats: GenerationStats

    @property
    def new_tokens(self) -> torch.Tensor:
        """The generated tokens only, int64 ``[new_tokens]``."""
        return self.sequences[0, self.stats.prompt_tokens :]


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

    Returns:
        The prompt plus generated tokens and a :class:`GenerationStats`.
    """
    prompt = _as_prompt(input_ids)
    if streamer is not None:
        streamer.put(prompt.cpu())
    return _speculate(
        model,
        prompt,
        max_new_tokens=max_new_tokens,
        drafter=drafter,
        eos=_eos_set(eos_token_id, model),
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
        streamer=streamer,
        logits_processor=logits_processor,
        stopping_criteria=stopping_criteria,
    )


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.no_grad()
def _speculate(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    *,
    max_new_tokens: int,
    drafter: Drafter | None,
    eos: frozenset[int],
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
    streamer: Any | None,
    logits_processor: LogitsProcessorList | None,
    stopping_criteria: StoppingCriterion | None,
) -> GenerationResult:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise TypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    _check_sampling(do_sample, temperature, top_k, top_p)
    if drafter is None:
        drafter = default_drafter()
    elif not isinstance(drafter, Drafter):
        raise TypeError(f"drafter must be a sam_decoding Drafter, got {type(drafter).__name__}")
    tree_capable = attention_implementation(model) in TREE_CAPABLE_ATTENTION
    if drafter.proposes_trees:
        check_tree_support(model)

    started = time.perf_counter()
    device = next(model.parameters()).device
    prompt = prompt.to(device)
    prompt_length = prompt.shape[1]
    stats = GenerationStats(prompt_tokens=prompt_length)
    sequence = torch.empty((1, prompt_length + max_new_tokens), dtype=torch.long, device=device)
    sequence[:, :prompt_length] = prompt
    if max_new_tokens == 0:
        stats.total_seconds = time.perf_counter() - started
        if streamer is not None:
            streamer.end()
        return GenerationResult(sequence, stats)

    cache = DynamicCache(config=model.config)
    check_cache_layout(cache)
    vocab_size = model.get_input_embeddings().num_embeddings
    mask_dtype = next(model.parameters()).dtype
    processors = LogitsProcessorList(logits_processor or [])
    if do_sample:
        processors.extend(_sampling_warpers(temperature, top_k, top_p))

    if prompt_length > 1:
        tick = time.perf_counter()
        extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
        model(input_ids=prompt[:, :-1], use_cache=True, **cache_arguments(model, cache), **extra)
        stats.prefill_seconds = time.perf_counter() - tick

    tick = time.perf_counter()
    drafter.begin(prompt[0].cpu().numpy())
    stats.draft_seconds += time.perf_counter() - tick

    past_length = prompt_length - 1
    last_token = int(prompt[0, -1])
    length = prompt_length  # tokens in `sequence` so far
    stop_at = prompt_length + max_new_tokens
    finished = False
    while not finished:
        tick = time.perf_counter()
        remaining = stop_at - length
        # The target adds one token of its own per step, so deeper draft tokens could never be used.
        draft = drafter.propose(remaining - 1) if remaining > 1 else Draft.empty("none")
        validate_draft(draft, vocab_size)
        draft = limit_depth(draft, remaining - 1)
        if draft.parents is not None and not tree_capable:
            check_tree_support(model)
        drafted = time.perf_counter()

        inputs = build_step_inputs(last_token, draft, past_length, dtype=mask_dtype, device=device)
        output = model(
            input_ids=inputs.input_ids,
            position_ids=inputs.position_ids,
            attention_mask=inputs.attention_mask,
            use_cache=True,
            **cache_arguments(model, cache),
        )
        logits = output.logits[0]

        step_start = length
        state = {"length": length, "stopped": False, "scores": None}

        if processors or do_sample:

            def choose(node: int) -> int:
                scores = logits[node : node + 1].float()
                if processors:
                    scores = processors(sequence[:, : state["length"]], scores)
                if do_sample:
                    probs = torch.softmax(scores, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    token = int(scores.argmax(dim=-1))
                state["scores"] = scores
                return token

        else:
            greedy_choices = logits.argmax(dim=-1).tolist()

            def choose(node: int) -> int:
                return greedy_choices[node]

        def stop(token: int) -> bool:
            position = state["length"]
            sequence[0, position] = token
            state["length"] = position + 1
            if token in eos or position + 1 >= stop_at:
                state["stopped"] = True
            elif stopping_criteria is not None:
                scores = state["scores"]
                if scores is None:
                    scores = logits[0:1]
                if bool(stopping_criteria(sequence[:, : position + 1], scores).all()):
                    state["stopped"] = True
            return state["stopped"]

        emitted, path = walk(inputs, choose, stop)
        keep_cache_entries(cache, past_length, path)
        past_length += len(path)
        length = state["length"]
        finished = state["stopped"]
        verified = time.perf_counter()

        emitted_array = np.asarray(emitted, dtype=np.int64)
        if not finished:
            feedback = Verified(inputs.input_ids[0].cpu(), logits) if drafter.wants_logits else None
            drafter.accept(emitted_array, feedback)
            last_token = emitted[-1]
        # Every emitted token but the last was a draft token; the last one too if the walk stopped on it.
        accepted = len(emitted) - 1 + int(inputs.child(path[-1], emitted[-1]) is not None)
        stats.steps += 1
        stats.drafted_tokens += len(draft)
        stats.accepted_tokens += accepted
        if len(draft):
            source = draft.source
            stats.drafts_by_source[source] = stats.drafts_by_source.get(source, 0) + 1
            stats.drafted_by_source[source] = stats.drafted_by_source.get(source, 0) + len(draft)
            stats.accepted_by_source[source] = stats.accepted_by_source.get(source, 0) + accepted
        if streamer is not None:
            streamer.put(sequence[0, step_start:length].cpu())
        done = time.perf_counter()
        stats.draft_seconds += (drafted - tick) + (done - verified)
        stats.verify_seconds += verified - drafted

    if streamer is not None:
        streamer.end()
    stats.new_tokens = length - prompt_length
    stats.total_seconds = time.perf_counter() - started
    return GenerationResult(sequence[:, :length], stats)
