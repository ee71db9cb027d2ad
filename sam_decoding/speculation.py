"""The speculative decoding loop: one object per call, one method per stage of a step.

A step drafts (the drafter proposes), selects (the policy keeps the nodes worth verifying),
verifies (one forward pass of the context's last token plus the kept nodes), walks (emits the
tokens the target itself picks while they match the draft), prunes the KV cache to the accepted
path, and feeds the outcome back to the drafter and the policy. The emitted sequence is exactly
what ordinary decoding would give (greedy: token for token, up to floating-point ties; sampling:
the same distribution): drafts and the policy decide only how many tokens one pass verifies.

The cache always holds every context token except the last one, which is re-fed at the start of
the next step; so a step of ``k`` draft tokens is a forward pass of ``q = k + 1`` tokens.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import LogitsProcessorList

from sam_decoding.drafters.base import Draft, Drafter, Verified
from sam_decoding.kv_cache import (
    cache_arguments,
    check_cache_layout,
    fit_tree_to_window,
    keep_cache_entries,
    rollback_cache,
    sliding_window,
)
from sam_decoding.stats import GenerationResult, GenerationStats
from sam_decoding.verification import (
    TREE_CAPABLE_ATTENTION,
    StepInputs,
    attention_implementation,
    build_step_inputs,
    check_tree_support,
    validate_draft,
    walk,
)

if TYPE_CHECKING:
    from sam_decoding.policy import Plan, VerificationPolicy

# A hook called on the growing sequence after every emitted token, like transformers'
# StoppingCriteriaList: (input_ids [1, length], scores [1, vocab]) -> bool tensor [1].
StoppingCriterion = Callable[[torch.Tensor, torch.Tensor], Any]


@dataclass(frozen=True)
class DecodingSettings:
    """How tokens are chosen and when generation stops, resolved once per call.

    Attributes:
        max_new_tokens: Most tokens to generate (>= 0).
        eos: Token ids that end generation (emitted, then stop).
        do_sample: Sample from the processed distribution instead of taking its argmax.
        processors: Logits processors and sampling warpers, in the order transformers applies them.
        generator: Random source for sampling.
        stopping_criteria: Called after every emitted token; generation ends when it returns true.
        streamer: Receives each step's new tokens, then ``end()``.
    """

    max_new_tokens: int
    eos: frozenset[int]
    do_sample: bool = False
    processors: LogitsProcessorList | None = None
    generator: torch.Generator | None = None
    stopping_criteria: StoppingCriterion | None = None
    streamer: Any | None = None


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


class _Walker:
    """Chooses the target's token at each node of one step and writes emitted tokens into the sequence."""

    def __init__(self, run: SpeculativeRun, logits: torch.Tensor) -> None:
        self.run = run
        self.logits = logits
        self.scores: torch.Tensor | None = None
        self.stopped = False
        settings = run.settings
        self._plain_greedy = not settings.processors and not settings.do_sample
        self._greedy_choices = logits.argmax(dim=-1).tolist() if self._plain_greedy else None

    def choose(self, node: int) -> int:
        if self._greedy_choices is not None:
            return self._greedy_choices[node]
        settings = self.run.settings
        scores = self.logits[node : node + 1].float()
        if settings.processors:
            scores = settings.processors(self.run.sequence[:, : self.run.length], scores)
        self.scores = scores
        if settings.do_sample:
            probs = torch.softmax(scores, dim=-1)
            return int(torch.multinomial(probs, 1, generator=settings.generator))
        return int(scores.argmax(dim=-1))

    def stop(self, token: int) -> bool:
        run, settings = self.run, self.run.settings
        position = run.length
        run.sequence[0, position] = token
        run.length = position + 1
        if token in settings.eos or run.length >= run.stop_at:
            self.stopped = True
        elif settings.stopping_criteria is not None:
            scores = self.scores if self.scores is not None else self.logits[0:1]
            self.stopped = bool(settings.stopping_criteria(run.sequence[:, : run.length], scores).all())
        return self.stopped


class SpeculativeRun:
    """One speculative generation: the KV cache, the growing sequence, and the step loop over them."""

    def __init__(
        self,
        model: torch.nn.Module,
        prompt: torch.Tensor,
        settings: DecodingSettings,
        drafter: Drafter,
        policy: VerificationPolicy | None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.drafter = drafter
        self.policy = policy
        self.device = next(model.parameters()).device
        self.prompt = prompt.to(self.device)
        prompt_length = self.prompt.shape[1]
        self.stats = GenerationStats(prompt_tokens=prompt_length)
        self.sequence = torch.empty((1, prompt_length + settings.max_new_tokens), dtype=torch.long, device=self.device)
        self.sequence[:, :prompt_length] = self.prompt
        self.length = prompt_length  # tokens in `sequence` so far
        self.stop_at = prompt_length + settings.max_new_tokens
        self.past_length = prompt_length - 1  # tokens whose keys/values are cached
        self.last_token = int(self.prompt[0, -1])
        self.cache = rollback_cache(model.config)
        check_cache_layout(self.cache)
        self.window = sliding_window(model.config)
        self.cache_kwargs = cache_arguments(model, self.cache)
        self.vocab_size = model.get_input_embeddings().num_embeddings
        self.mask_dtype = next(model.parameters()).dtype
        self.tree_capable = attention_implementation(model) in TREE_CAPABLE_ATTENTION
        self.wants_feedback = drafter.wants_logits or drafter.wants_hidden_states
        self._synchronize = torch.cuda.synchronize if self.device.type == "cuda" else None
        if policy is not None:
            self.stats.calibration_seconds = policy.prepare(model)

    def run(self) -> GenerationResult:
        started = time.perf_counter()
        if self.settings.max_new_tokens > 0:
            self._prefill()
            tick = time.perf_counter()
            self.drafter.begin(self.prompt[0].cpu().numpy())
            self.stats.draft_seconds += time.perf_counter() - tick
            while not self._step():
                pass
        if self.settings.streamer is not None:
            self.settings.streamer.end()
        if self.policy is not None:
            self.policy.finish()
        self.stats.new_tokens = self.length - self.stats.prompt_tokens
        self.stats.total_seconds = time.perf_counter() - started
        return GenerationResult(self.sequence[:, : self.length], self.stats)

    def _prefill(self) -> None:
        if self.prompt.shape[1] < 2:
            return
        tick = time.perf_counter()
        extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(self.model) else {}
        self.model(input_ids=self.prompt[:, :-1], use_cache=True, **self.cache_kwargs, **extra)
        self.stats.prefill_seconds = time.perf_counter() - tick

    def _propose(self) -> list[Draft]:
        """The drafter's proposal (or, under a policy, its alternative proposals), checked and depth-limited."""
        remaining = self.stop_at - self.length
        # The target adds one token of its own per step, so deeper draft tokens could never be used.
        if remaining <= 1:
            return [Draft.empty("none")]
        if self.policy is not None:
            drafts = self.drafter.propose_candidates(remaining - 1)
        else:
            drafts = [self.drafter.propose(remaining - 1)]
        checked = []
        for draft in drafts:
            validate_draft(draft, self.vocab_size)
            draft = draft.limit_depth(remaining - 1)
            draft = fit_tree_to_window(draft, self.past_length, self.window)
            if draft.parents is not None and not self.tree_capable:
                check_tree_support(self.model)
            checked.append(draft)
        return checked or [Draft.empty("none")]

    def _forward(self, inputs: StepInputs) -> tuple[Any, float]:
        tick = time.perf_counter()
        output = self.model(
            input_ids=inputs.input_ids,
            position_ids=inputs.position_ids,
            attention_mask=inputs.attention_mask,
            use_cache=True,
            output_hidden_states=self.drafter.wants_hidden_states,
            **self.cache_kwargs,
        )
        if self._synchronize is not None:
            self._synchronize()
        return output, time.perf_counter() - tick

    def _step(self) -> bool:
        """Run one draft-select-verify-walk-prune step; return whether generation is finished."""
        stats = self.stats
        tick = time.perf_counter()
        proposals = self._propose()
        drafted = time.perf_counter()
        plan: Plan | None = None
        draft = proposals[0]
        if self.policy is not None:
            plan = self.policy.choose(proposals, self.past_length + 1, drafted - tick)
            draft = plan.draft
        selected = time.perf_counter()

        cache_length = self.past_length
        inputs = build_step_inputs(self.last_token, draft, cache_length, dtype=self.mask_dtype, device=self.device)
        output, forward_seconds = self._forward(inputs)
        logits = output.logits[0]
        step_start = self.length
        walker = _Walker(self, logits)
        emitted, path = walk(inputs, walker.choose, walker.stop)
        keep_cache_entries(self.cache, self.past_length, path)
        self.past_length += len(path)
        verified = time.perf_counter()

        # Every emitted token but the last was a draft token; the last one too if the walk stopped on it.
        last_child = inputs.child(path[-1], emitted[-1])
        accepted = len(emitted) - 1 + int(last_child is not None)
        expected = 0.0
        if self.policy is not None:
            self.policy.observe_cost(len(draft) + 1, cache_length, forward_seconds)
            if plan is not None:
                self.policy.learn(plan, path, last_child)
                self.policy.advance(emitted)
                expected = plan.expected_accepted
        learned = time.perf_counter()
        # The final step is accepted too, so that the drafter has seen the whole response when the
        # loop calls its finish() (a response cache records it then).
        feedback = None
        if self.wants_feedback:
            hidden = output.hidden_states[-1][0] if self.drafter.wants_hidden_states else None
            feedback = Verified(inputs.input_ids[0].cpu(), logits, tuple(path), hidden)
        self.drafter.accept(np.asarray(emitted, dtype=np.int64), feedback)
        self.last_token = emitted[-1]
        stats.proposed_tokens += sum(len(proposal) for proposal in proposals)
        stats.count_step(draft.source, len(draft), accepted, expected)
        if self.settings.streamer is not None:
            self.settings.streamer.put(self.sequence[0, step_start : self.length].cpu())
        done = time.perf_counter()
        stats.draft_seconds += (drafted - tick) + (done - learned)
        stats.policy_seconds += (selected - drafted) + (learned - verified)
        stats.verify_seconds += verified - selected
        if self.policy is not None:
            self.policy.observe_overhead(done - tick - forward_seconds)
        return walker.stopped
