"""Speculative generation on a ``llama_cpp.Llama``: sam-decoding's drafters and cost-aware policy, llama.cpp's forward pass.

A step asks the drafter for its candidate drafts, lets the policy keep the part worth verifying at
llama.cpp's measured cost ``t(q)``, feeds the context's last token plus the kept draft as one batch
(logits kept only at those positions), walks the draft while the target keeps it, and removes the
rejected tokens' entries from the KV memory. The context's memory holds every token but the last,
which the next step feeds again. The prompt is evaluated as llama-cpp-python's own loop evaluates it
(batches of ``n_batch`` tokens, logits kept for each batch's last token) and the first token is read
from those logits, so a call that verifies no draft evaluates exactly plain decoding's batches.

Greedy (``temperature=0``): the target's argmax is emitted at each position while it matches the
draft. Sampling: each position applies :func:`~sam_decoding.llama_cpp.sampling.verify_position`
to the target distribution of :class:`~sam_decoding.llama_cpp.sampling.SamplingSettings`, which
keeps every emitted token distributed exactly as that distribution.

Exactness: every emitted token is the argmax of (or is drawn from the distribution of) llama.cpp's
logits at its position, computed in the batch that verified it. llama.cpp's quantized CPU kernels do
not give bit-identical logits for a batch of several tokens and for one token, so where two
candidates are nearly tied the output can differ from one-token-at-a-time decoding; the tests
measure how often, and bench reports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sam_decoding.drafters.base import Draft, Drafter
from sam_decoding.llama_cpp.engine import MAX_PASS_TOKENS, LlamaTarget, load_or_calibrate
from sam_decoding.llama_cpp.sampling import SamplingSettings, verify_position
from sam_decoding.policy.cost_aware import CostAwarePolicy
from sam_decoding.policy.cost_profile import CostProfile
from sam_decoding.stats import GenerationStats

_POLICIES = ("cost", "all")
#: A plain step (nothing drafted) refines the cost profile once in this many.
_PLAIN_OBSERVE_EVERY = 8
#: After this many steps in a row whose drafts the policy did not verify, the loop asks the drafter
#: only every 2nd step, then every 4th, ... (a doubling per as many more such steps), at most every
#: ``MAX_DRAFT_SPACING``-th, until a draft is verified again. On a CPU where a verified token costs
#: nearly a whole pass, drafts seldom pay, and asking for them (drafter and policy) costs a few
#: percent of every step.
IDLE_DRAFTS_BEFORE_SPACING = 4
MAX_DRAFT_SPACING = 16


@dataclass
class _DraftPacing:
    """How often the loop asks the drafter (see :data:`IDLE_DRAFTS_BEFORE_SPACING`)."""

    idle: int = 0
    step: int = 0

    def asks(self) -> bool:
        """Whether this step asks the drafter (call once per step)."""
        self.step += 1
        if self.idle < IDLE_DRAFTS_BEFORE_SPACING:
            return True
        doublings = self.idle // IDLE_DRAFTS_BEFORE_SPACING
        return self.step % min(1 << doublings, MAX_DRAFT_SPACING) == 0

    def record(self, proposed: bool, verified: int) -> None:
        """A step that asked: whether the drafter proposed anything, and how many tokens were verified."""
        if proposed:  # a step with nothing to propose says nothing about whether drafts pay
            self.idle = 0 if verified else self.idle + 1


@dataclass
class LlamaCppResult:
    """Output of :func:`generate`.

    Attributes:
        new_tokens: The generated token ids (the end-of-sequence token included when it ended generation).
        stats: Counters and timings (``steps`` = verification passes; the prefill is not one).
        stopped_at_end: Whether an end-of-generation token ended the call (else ``max_new_tokens`` did).
    """

    new_tokens: list[int]
    stats: GenerationStats
    stopped_at_end: bool = False

    @property
    def tokens_per_evaluation(self) -> float:
        """Generated tokens per verification pass (1.0 for plain decoding)."""
        return len(self.new_tokens) / self.stats.steps if self.stats.steps else 0.0


@dataclass
class _Session:
    """What one ``Llama`` object keeps across calls: its target wrapper, one measured cost profile,
    and a cost-aware policy per mode (``"greedy"``, ``"sampling"``) that learns its own acceptance
    rates (a draft is accepted less often when sampled) over that shared profile."""

    llm: Any
    target: LlamaTarget
    profile: CostProfile | None = None
    policies: dict[str, CostAwarePolicy] = field(default_factory=dict)


_SESSIONS: dict[int, _Session] = {}


def _session(llm: Any, policy: str | CostAwarePolicy, greedy: bool = True) -> tuple[LlamaTarget, CostAwarePolicy | None, float]:
    """The target wrapper and the policy of a call (calibrating the cost profile on first use); also the seconds calibrating."""
    session = _SESSIONS.get(id(llm))
    if session is None or session.llm is not llm:
        session = _SESSIONS[id(llm)] = _Session(llm, LlamaTarget(llm))
    if policy == "all":
        return session.target, None, 0.0
    if isinstance(policy, CostAwarePolicy):
        chosen = policy
    else:
        chosen = session.policies.setdefault("greedy" if greedy else "sampling", CostAwarePolicy())
    spent = 0.0
    if chosen.profile is None:
        if session.profile is None:
            session.profile, spent = load_or_calibrate(session.target)
        chosen.profile = session.profile
    chosen.prepare(None)
    return session.target, chosen, spent


def _check_settings(llm: Any, prompt_tokens: Sequence[int], drafter: Any, max_new_tokens: int, policy: Any) -> list[int]:
    if not hasattr(llm, "ctx") or not hasattr(llm, "model"):
        raise TypeError(f"llm must be a loaded llama_cpp.Llama, got {type(llm).__name__}")
    if drafter is not None and not isinstance(drafter, Drafter):
        raise TypeError(f"drafter must be a sam_decoding Drafter, got {type(drafter).__name__}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not (isinstance(policy, CostAwarePolicy) or policy in _POLICIES):
        raise ValueError(f"policy must be one of {', '.join(_POLICIES)} or a CostAwarePolicy, got {policy!r}")
    tokens = [int(token) for token in prompt_tokens]
    if not tokens:
        raise ValueError("prompt_tokens is empty: give at least one token (e.g. the model's BOS)")
    n_vocab = llm.n_vocab()
    bad = next((token for token in tokens if not 0 <= token < n_vocab), None)
    if bad is not None:
        raise ValueError(f"prompt token {bad} is outside the model's vocabulary of {n_vocab}")
    if len(tokens) + max_new_tokens > llm.n_ctx():
        raise ValueError(
            f"prompt ({len(tokens)}) + max_new_tokens ({max_new_tokens}) exceeds the context of {llm.n_ctx()} tokens"
        )
    return tokens


def _first_chain(draft: Draft) -> Draft:
    """A tree's first-child path as a chain (llama.cpp verification here is chains only)."""
    if draft.parents is None or not len(draft):
        return draft
    keep = [0]
    for index in range(1, len(draft)):
        if draft.parents[index] == keep[-1]:
            keep.append(index)
    indices = np.asarray(keep)
    probabilities = None if draft.probabilities is None else draft.probabilities[indices]
    return Draft(draft.tokens[indices], None, draft.source, probabilities, draft.match_length)


def stream(
    llm: Any,
    prompt_tokens: Sequence[int],
    *,
    drafter: Drafter | None = None,
    max_new_tokens: int = 128,
    policy: str | CostAwarePolicy = "cost",
    temperature: float = 0.0,
    top_k: int = 40,
    top_p: float = 0.95,
    min_p: float = 0.05,
    seed: int | None = None,
    stats: GenerationStats | None = None,
) -> Iterator[list[int]]:
    """Generate from ``prompt_tokens``, yielding each verification step's new tokens (a list of ids).

    Same arguments as :func:`generate`; pass a :class:`~sam_decoding.GenerationStats` as ``stats`` to
    read the counters once the iterator is exhausted. Generation ends at the model's
    end-of-generation token (yielded) or after ``max_new_tokens`` tokens.
    """
    sampling = SamplingSettings(temperature, top_k, top_p, min_p, seed)
    tokens = _check_settings(llm, prompt_tokens, drafter, max_new_tokens, policy)
    stats = stats if stats is not None else GenerationStats()
    stats.prompt_tokens = len(tokens)
    started = time.perf_counter()
    target, chooser, calibration = _session(llm, policy, sampling.greedy)
    stats.calibration_seconds = calibration
    if drafter is None:
        from sam_decoding.drafters.sam import SamDrafter

        drafter = SamDrafter(use_tree=False)
    try:
        yield from _run(target, tokens, drafter, chooser, max_new_tokens, stats, None if sampling.greedy else sampling)
    finally:
        if chooser is not None:
            chooser.finish()
        # The Llama object's own bookkeeping must not believe its cache still matches its input_ids.
        target.clear()
        stats.total_seconds = time.perf_counter() - started - calibration


def _run(
    target: LlamaTarget,
    prompt: list[int],
    drafter: Drafter,
    policy: CostAwarePolicy | None,
    max_new_tokens: int,
    stats: GenerationStats,
    sampling: SamplingSettings | None = None,
) -> Iterator[list[int]]:
    if max_new_tokens == 0:
        return
    rng = sampling.generator() if sampling is not None else None
    tick = time.perf_counter()
    target.clear()
    # The whole prompt in the batches plain decoding uses, so the first token comes from the very
    # logits plain decoding reads (llama.cpp's kernels differ slightly between batch shapes).
    target.prefill(prompt)
    if sampling is None:
        first = target.argmax_rows(0, 1)[0]
    else:
        first, _ = verify_position(sampling.distribution(target.rows(1)[0]), None, rng)
    stats.prefill_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    drafter.begin(np.asarray(prompt, dtype=np.int64))
    drafter.accept(np.asarray([first], dtype=np.int64), None)
    stats.draft_seconds += time.perf_counter() - tick
    if policy is not None:
        policy.advance([first])
    stats.count_step("none", 0, 0, 0.0)
    stats.new_tokens = 1
    finished = target.is_end(first) or max_new_tokens == 1
    if finished:
        drafter.finish()
    yield [first]
    if finished:
        return
    past = len(prompt)
    last = first
    produced = 1
    plain_steps = 0
    nothing = np.zeros(0, dtype=np.int64)
    pacing = _DraftPacing()
    while True:
        tick = time.perf_counter()
        room = min(max_new_tokens - produced - 1, MAX_PASS_TOKENS - 1)
        asks = room > 0 and (policy is None or pacing.asks())
        proposals = [_first_chain(draft) for draft in drafter.propose_candidates(room) if len(draft)] if asks else []
        drafted = time.perf_counter()
        plan = None
        draft_tokens, source = nothing, "none"
        # A step with nothing drafted is a plain step: the policy has nothing to size, so it is not asked.
        if proposals:
            if policy is not None:
                plan = policy.choose(proposals, past + 1, drafted - tick)
                draft = plan.draft
            else:
                draft = max(proposals, key=len)
            draft_tokens, source = draft.tokens[:room], draft.source
        selected = time.perf_counter()

        drafted_count = len(draft_tokens)
        if asks:
            pacing.record(bool(proposals), drafted_count)
        fed = [last, *draft_tokens.tolist()] if drafted_count else [last]
        target.decode(fed, past, 0)
        if sampling is None:
            choices = target.argmax_rows(0, len(fed))
        else:
            target.logits(len(fed) - 1)  # the decode's cost ends where its logits are readable
        forward_seconds = time.perf_counter() - selected
        emitted: list[int] = []
        ended = False
        for index in range(len(fed)):
            if sampling is None:
                choice = choices[index]
            else:
                # Sampling: a position is computed only once the walk reaches it. A rejection emits a token
                # other than the draft's and an acceptance the draft's, so the walk below stops exactly as greedy's.
                draft_token = int(draft_tokens[index]) if index < drafted_count else None
                choice, _ = verify_position(sampling.distribution(target.logits(index)), draft_token, rng)
            emitted.append(choice)
            if target.is_end(choice) or produced + len(emitted) >= max_new_tokens:
                ended = target.is_end(choice)
                break
            if index >= drafted_count or draft_tokens[index] != choice:
                break
        count = len(emitted)
        if count < len(fed):
            # Inputs 0 .. count - 1 were on the accepted path; later ones are dropped.
            target.remove_from(past + count)
        cache_length = past
        past += count
        last = emitted[-1]
        produced += count
        # The last emitted token was a draft token too if the walk stopped on it (end or length).
        hit_last = count - 1 < drafted_count and int(draft_tokens[count - 1]) == last
        accepted = count - 1 + int(hit_last)
        verified = time.perf_counter()

        expected = 0.0
        if policy is not None:
            # A plain pass's cost is refreshed once every few plain steps: observing is a few percent
            # of a plain step's own overhead, and the single-token cost barely moves within a call.
            plain_steps += not drafted_count
            if drafted_count or plain_steps % _PLAIN_OBSERVE_EVERY == 0:
                policy.observe_cost(len(fed), cache_length, forward_seconds)
            if plan is not None:
                policy.learn(plan, list(range(count)), count if hit_last else None)
                expected = plan.expected_accepted
            policy.advance(emitted)
        learned = time.perf_counter()
        drafter.accept(np.asarray(emitted, dtype=np.int64), None)
        if proposals:
            stats.proposed_tokens += sum(len(proposal) for proposal in proposals)
        stats.count_step(source, drafted_count, accepted, expected)
        stats.new_tokens = produced
        done = time.perf_counter()
        stats.draft_seconds += (drafted - tick) + (done - learned)
        stats.policy_seconds += (selected - drafted) + (learned - verified)
        stats.verify_seconds += verified - selected
        if policy is not None:
            policy.observe_overhead(done - tick - forward_seconds)
        finished = ended or produced >= max_new_tokens
        if finished:
            drafter.finish()
        yield emitted
        if finished:
            return


def generate(
    llm: Any,
    prompt_tokens: Sequence[int],
    *,
    drafter: Drafter | None = None,
    max_new_tokens: int = 128,
    policy: str | CostAwarePolicy = "cost",
    temperature: float = 0.0,
    top_k: int = 40,
    top_p: float = 0.95,
    min_p: float = 0.05,
    seed: int | None = None,
    on_tokens: Callable[[list[int]], Any] | None = None,
) -> LlamaCppResult:
    """Generate with speculative decoding on a ``llama_cpp.Llama``: greedy, or sampling exactly from llama.cpp's distribution.

    Args:
        llm: A loaded ``llama_cpp.Llama`` (its KV memory is used and left empty).
        prompt_tokens: The prompt as token ids of ``llm``'s vocabulary (e.g. ``llm.tokenize(text)``).
        drafter: Any sam-decoding drafter; ``None``: a :class:`~sam_decoding.SamDrafter` over the text so
            far. Trees are verified along their first-child path (chains).
        max_new_tokens: Most tokens to generate.
        policy: ``"cost"`` (default): size each step by llama.cpp's measured cost curve on this machine
            (calibrated in about 2 s at first use, cached per GGUF file, thread count and processor);
            ``"all"``: verify every drafted token; or a :class:`~sam_decoding.CostAwarePolicy`.
        temperature: 0 (default): greedy, each token the argmax of llama.cpp's logits. Above 0: sample.
            The distribution sampled is the one llama-cpp-python's ``Llama.create_completion`` samples
            with the same ``temperature``, ``top_k``, ``top_p`` and ``min_p`` and its other settings
            neutral (no repetition penalties, ``typical_p=1``, no mirostat, grammar or logit bias):
            top-k, then top-p, then min-p, all on the logits at temperature 1, then
            ``softmax(logits / temperature)`` over the tokens kept (details in
            :mod:`sam_decoding.llama_cpp.sampling`; llama.cpp sums in float32, so over the whole
            vocabulary its top-p cut can fall a token earlier). Speculative verification keeps it
            exactly: a drafted token is accepted with its probability, else a token is drawn from
            the distribution without it.
        top_k: Keep the ``top_k`` most likely tokens (0: all); llama-cpp-python's default 40.
        top_p: Keep the most likely tokens holding at least this probability, in (0, 1]; default 0.95.
        min_p: Keep tokens at least ``min_p`` times as likely as the most likely one, in [0, 1);
            default 0.05.
        seed: Seeds the call's NumPy generator (``None``: fresh entropy). The same seed repeats a
            call's output when the steps are the same (``policy="all"`` and the same drafter state;
            the cost-aware policy sizes steps from timings). The draws are NumPy's, not llama.cpp's:
            the distribution matches llama-cpp-python's, the individual samples do not.
        on_tokens: Called with each step's new tokens as they are verified (streaming).

    Returns:
        The new tokens and the call's counters (``stats.steps`` verification passes, drafted and
        accepted tokens, seconds spent drafting, in the policy and verifying).
    """
    stats = GenerationStats()
    new_tokens: list[int] = []
    steps = stream(
        llm, prompt_tokens, drafter=drafter, max_new_tokens=max_new_tokens, policy=policy,
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed, stats=stats,
    )
    for step_tokens in steps:
        new_tokens.extend(step_tokens)
        if on_tokens is not None:
            on_tokens(step_tokens)
    return LlamaCppResult(new_tokens, stats, bool(new_tokens) and _is_end(llm, new_tokens[-1]))


def _is_end(llm: Any, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), token))
