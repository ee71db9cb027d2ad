"""The decoding methods a benchmark compares, each behind one small interface.

All are greedy and should emit exactly vanilla's tokens. Methods that use this package's engine
report forward passes from its step count; the transformers baselines count the model's forward
calls with a hook. Either way a "forward pass" here is one that emits tokens, so MAT (new tokens
per forward pass) is comparable; the engine's separate prompt prefill is not counted.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Every method, in the order reports list them. Names ending in ``-fixed`` verify every drafted
#: node (no cost-aware policy): ``sam+tr-fixed`` is the drafters' previous fixed sizes,
#: ``sam-chain8-fixed`` the crude cap of SAM chains of at most 8 tokens with no fallback.
METHOD_NAMES: tuple[str, ...] = (
    "vanilla",
    "hf-prompt-lookup",
    "pld",
    "token-recycling",
    "sam",
    "sam+tr",
    "sam+tr-fixed",
    "sam-chain8-fixed",
    "heads",
    "sam+heads",
    "sam+cache",
    "sam+tr+cache",
    "suffix",
    "suffix-tree",
    "suffix+policy",
)
#: Methods run when none are named.
DEFAULT_METHODS: tuple[str, ...] = ("vanilla", "hf-prompt-lookup", "pld", "token-recycling", "sam", "sam+tr")
#: What ``sam-decoding bench --quick`` runs unless ``--methods`` is given: the two transformers
#: baselines and this package's own method.
QUICK_METHOD_NAMES: tuple[str, ...] = ("vanilla", "hf-prompt-lookup", "sam")
#: Methods that draft from a static corpus and so need one built for the suite.
STATIC_CORPUS_METHODS: frozenset[str] = frozenset(
    {"sam", "sam+tr", "sam+tr-fixed", "sam-chain8-fixed", "sam+heads", "sam+cache", "sam+tr+cache"}
)
#: Methods that learn from the responses they produced (a :class:`~sam_decoding.ResponseCache`), so
#: only serving runs have them: in other runs every question must see only the corpus.
CACHE_METHODS: frozenset[str] = frozenset({"sam+cache", "sam+tr+cache"})
#: SuffixDecoding (the optional ``arctic-inference`` package) with the static corpus's documents in its
#: global tree: its chain or its tree with every node verified, and its tree under the cost-aware policy.
SUFFIX_METHODS: frozenset[str] = frozenset({"suffix", "suffix-tree", "suffix+policy"})
#: ``sam-chainN-fixed`` for any cap N: SAM chains of at most N tokens, no fallback, no policy.
#: Listed next to the policy, a few caps show that no fixed size does as well on every kind of prompt.
_CHAIN_CAP = re.compile(r"sam-chain([1-9][0-9]{0,2})-fixed")


def is_method(name: str) -> bool:
    """Whether ``name`` is a method: one of :data:`METHOD_NAMES` or ``sam-chainN-fixed`` (1 <= N <= 999)."""
    return name in METHOD_NAMES or _CHAIN_CAP.fullmatch(name) is not None


def needs_static_corpus(name: str) -> bool:
    """Whether the method ``name`` drafts from a static corpus (or, for SuffixDecoding, from its documents)."""
    return name in STATIC_CORPUS_METHODS or name in SUFFIX_METHODS or _CHAIN_CAP.fullmatch(name) is not None


def unavailable_methods(names: Sequence[str]) -> tuple[list[str], str | None]:
    """``names`` without the methods whose optional package is missing, and one line saying why (or ``None``)."""
    from sam_decoding.benchmark.suffix_decoding import is_available, unavailable_message

    suffix = [name for name in names if name in SUFFIX_METHODS]
    if not suffix or is_available():
        return list(names), None
    kept = [name for name in names if name not in SUFFIX_METHODS]
    return kept, f"skipping {', '.join(suffix)}: {unavailable_message()}"


#: Methods that draft with trained heads and so need a heads file for the model.
HEADS_METHODS: frozenset[str] = frozenset({"heads", "sam+heads"})
#: Fixed draft sizes of the ``-fixed`` methods (the drafters' defaults before the cost-aware policy).
FIXED_SAM_MAX_DRAFT = 16
FIXED_SAM_TREE_NODES = 32
FIXED_TR_NODES = 64
#: Draft length of the prompt-lookup methods, in tokens (transformers' ``prompt_lookup_num_tokens``).
PROMPT_LOOKUP_TOKENS = 10


@dataclass(frozen=True)
class Outcome:
    """What one method produced for one prompt: the new tokens and how many forward passes emitted them."""

    tokens: list[int]
    forward_passes: int
    drafted_by_source: dict[str, int] = field(default_factory=dict)
    accepted_by_source: dict[str, int] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)


class Method(ABC):
    """A way to generate greedily; ``run`` is what the runner times.

    ``reference_profile``: when set (a :class:`~sam_decoding.policy.CostProfile`, e.g. a quiet
    machine's or a GPU's), methods that know their verification sizes also report
    ``engine["modelled_seconds"]``: the time their forward passes would take under that profile,
    plus their measured drafting and policy time. It is independent of other load on the machine.
    """

    name: str = ""
    description: str = ""
    reference_profile: Any = None

    @abstractmethod
    def run(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> Outcome:
        """Generate up to ``max_new_tokens`` tokens after ``input_ids`` (``[1, length]``)."""

    def warm_up(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> None:
        """An untimed first call; a method that learns from its responses must not learn from this one."""
        self.run(model, input_ids, max_new_tokens=max_new_tokens, eos=eos)


def modelled_seconds(profile: Any, prompt_tokens: int, new_tokens: int, verified_sizes: dict[int, int]) -> float:
    """Seconds the verification passes ``{q: count}`` take under ``profile``, at the generation's mean cache length."""
    cache_length = prompt_tokens + new_tokens // 2
    return sum(count * profile.seconds(q, cache_length) for q, count in verified_sizes.items())


class _ForwardCounter:
    """Counts a module's forward calls while active."""

    def __init__(self, model: Any) -> None:
        self.calls = 0
        self._handle = model.register_forward_hook(self._count)

    def _count(self, module: Any, inputs: Any, output: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


class TransformersGenerate(Method):
    """transformers' own ``model.generate`` (greedy), optionally with its prompt-lookup decoding."""

    def __init__(self, name: str, description: str, **generate_options: Any) -> None:
        self.name = name
        self.description = description
        self.options = generate_options

    def run(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> Outcome:
        counter = _ForwardCounter(model)
        try:
            with torch.inference_mode():
                output = model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=list(eos) or None,
                    pad_token_id=eos[0] if eos else 0,
                    **self.options,
                )
        finally:
            counter.close()
        tokens = output[0, input_ids.shape[1] :].tolist()
        engine = {}
        if self.reference_profile is not None and not self.options:
            # Plain decoding: one pass of a single token per new token.
            engine["modelled_seconds"] = modelled_seconds(self.reference_profile, input_ids.shape[1], len(tokens), {1: len(tokens)})
        return Outcome(tokens, counter.calls, engine=engine)


#: Engine counters kept per measurement (seconds and token counts of :class:`~sam_decoding.GenerationStats`).
ENGINE_STATS: tuple[str, ...] = (
    "steps",
    "proposed_tokens",
    "drafted_tokens",
    "accepted_tokens",
    "expected_accepted_tokens",
    "draft_seconds",
    "policy_seconds",
    "verify_seconds",
    "prefill_seconds",
    "total_seconds",
)


class EngineGenerate(Method):
    """This package's speculative ``generate`` with a drafter made fresh for each prompt (or kept, if ``persistent``).

    ``policy``: a :class:`~sam_decoding.policy.CostAwarePolicy` of this method's own (it learns
    acceptance across the run's questions), or ``None`` to verify every drafted node.
    ``make_warmup_drafter``: the drafter of :meth:`warm_up`, for methods whose drafter learns from the
    responses it produced (default: the method's own).
    """

    def __init__(
        self,
        name: str,
        description: str,
        make_drafter: Any,
        *,
        persistent: bool = False,
        policy: Any = None,
        make_warmup_drafter: Any = None,
    ) -> None:
        self.name = name
        self.description = description
        self._make_drafter = make_drafter
        self._drafter = make_drafter() if persistent else None
        self._make_warmup_drafter = make_warmup_drafter
        self.policy = policy

    def warm_up(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> None:
        if self._make_warmup_drafter is None:
            super().warm_up(model, input_ids, max_new_tokens=max_new_tokens, eos=eos)
            return
        from sam_decoding.generation import generate

        generate(model, input_ids, drafter=self._make_warmup_drafter(), max_new_tokens=max_new_tokens, eos_token_id=list(eos), policy=self.policy)

    def run(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> Outcome:
        from sam_decoding.generation import generate

        drafter = self._drafter if self._drafter is not None else self._make_drafter()
        result = generate(
            model, input_ids, drafter=drafter, max_new_tokens=max_new_tokens, eos_token_id=list(eos), policy=self.policy
        )
        stats = result.stats
        engine = {name: getattr(stats, name) for name in ENGINE_STATS}
        engine["verified_sizes"] = {str(q): n for q, n in sorted(stats.verified_sizes.items())}
        if self.reference_profile is not None:
            engine["modelled_seconds"] = modelled_seconds(
                self.reference_profile, stats.prompt_tokens, stats.new_tokens, stats.verified_sizes
            ) + stats.draft_seconds + stats.policy_seconds
        return Outcome(
            result.new_tokens.tolist(),
            stats.steps,
            dict(stats.drafted_by_source),
            dict(stats.accepted_by_source),
            engine,
        )


class HeadsEngineGenerate(EngineGenerate):
    """:class:`EngineGenerate` whose drafter uses heads bound to the benchmarked model (read on the first run)."""

    def __init__(self, name: str, description: str, heads_file: Path, make_drafter: Any, *, policy: Any = None) -> None:
        self._heads_file = heads_file
        self._heads: Any = None
        super().__init__(name, description, lambda: make_drafter(self._heads), policy=policy)

    def run(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> Outcome:
        if self._heads is None:
            from sam_decoding.heads import MedusaHeads

            self._heads = MedusaHeads.load(self._heads_file, model)
        return super().run(model, input_ids, max_new_tokens=max_new_tokens, eos=eos)


def make_methods(
    names: Sequence[str],
    static_corpus: Path | None,
    cost_profile: Any = None,
    *,
    heads: Path | None = None,
    reference_profile: Any = None,
    corpus_documents: Callable[[], Sequence[Any]] | None = None,
    serving: bool = False,
) -> list[Method]:
    """The methods called ``names``, in that order; ``static_corpus`` is needed by the ``sam`` methods.

    ``heads`` is the heads file of the ``heads`` methods (default: the one shipped for the default model).
    ``reference_profile`` (default: ``cost_profile``) is the profile modelled times are computed under.
    ``corpus_documents`` returns the token arrays ``static_corpus`` was built from: the ``suffix``
    methods put them in SuffixDecoding's global tree (called once, only if one is among ``names``).
    ``serving``: the methods that can learn from the responses they produced keep them for later
    questions (SuffixDecoding's global tree); otherwise every question sees only the corpus.

    Token Recycling keeps its adjacency table across prompts, as in its paper (one drafter per method
    for the whole run); the SAM drafters are made fresh for each prompt, their dynamic automaton
    being per request anyway. Each engine method except the ``-fixed`` ones has a cost-aware policy
    of its own; ``cost_profile`` (a :class:`~sam_decoding.policy.CostProfile`) replaces the measured
    cost of this machine for all of them (e.g. a GPU-like profile), else the model's own is used.
    """
    from sam_decoding.drafters import HeadsDrafter, PromptLookupDrafter, SamDrafter, TokenRecyclingDrafter
    from sam_decoding.policy import CostAwarePolicy
    from sam_decoding.shards import load_corpus

    def policy() -> CostAwarePolicy:
        return CostAwarePolicy(profile=cost_profile)

    if reference_profile is None:
        reference_profile = cost_profile

    unknown = [name for name in names if not is_method(name)]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_NAMES)} or sam-chainN-fixed")
    if CACHE_METHODS.intersection(names) and not serving:
        raise ValueError("the +cache methods learn from earlier responses: they run only in a serving run (--serving)")
    automaton = None
    if any(needs_static_corpus(name) for name in names):
        if static_corpus is None:
            raise ValueError("the sam methods need a static corpus")
        automaton = load_corpus(static_corpus)
    if HEADS_METHODS.intersection(names) and heads is None:
        from sam_decoding.heads.default import default_heads_path

        heads = default_heads_path()
    recycler_for_sam = TokenRecyclingDrafter()
    fixed_recycler = TokenRecyclingDrafter(max_nodes=FIXED_TR_NODES)
    # The drafter's own defaults go into the report, so a table says which parameters produced it.
    probe = SamDrafter(None)
    sam_parameters = (
        f"max_draft={probe.max_draft}, min_probability={probe.min_probability}, "
        + (f"trees of {probe.tree_nodes} nodes per source" if probe.use_tree else "chains")
    )
    policy_note = "cost-aware policy" if cost_profile is None else f"cost-aware policy under the given cost profile `{cost_profile.key}`"
    factories = {
        "vanilla": lambda: TransformersGenerate("vanilla", "transformers `generate`, greedy"),
        "hf-prompt-lookup": lambda: TransformersGenerate(
            "hf-prompt-lookup",
            f"transformers prompt lookup decoding (`prompt_lookup_num_tokens={PROMPT_LOOKUP_TOKENS}`)",
            prompt_lookup_num_tokens=PROMPT_LOOKUP_TOKENS,
        ),
        "pld": lambda: EngineGenerate(
            "pld",
            f"this engine with `PromptLookupDrafter` ({PROMPT_LOOKUP_TOKENS}-token drafts), {policy_note}",
            lambda: PromptLookupDrafter(num_tokens=PROMPT_LOOKUP_TOKENS),
            policy=policy(),
        ),
        "token-recycling": lambda: EngineGenerate(
            "token-recycling",
            f"this engine with `TokenRecyclingDrafter` alone, {policy_note}",
            TokenRecyclingDrafter,
            persistent=True,
            policy=policy(),
        ),
        "sam": lambda: EngineGenerate(
            "sam",
            f"`SamDrafter` ({sam_parameters}): static corpus + dynamic automaton, no fallback, {policy_note}",
            lambda: SamDrafter(automaton),
            policy=policy(),
        ),
        "sam+tr": lambda: EngineGenerate(
            "sam+tr",
            f"`SamDrafter` with Token Recycling as the fallback, {policy_note}",
            lambda: SamDrafter(automaton, fallback=recycler_for_sam),
            policy=policy(),
        ),
        "sam+tr-fixed": lambda: EngineGenerate(
            "sam+tr-fixed",
            f"`SamDrafter` (max_draft={FIXED_SAM_MAX_DRAFT}, static tree of {FIXED_SAM_TREE_NODES} nodes) with a "
            f"{FIXED_TR_NODES}-node Token Recycling fallback, every drafted node verified (no policy)",
            lambda: SamDrafter(
                automaton, fallback=fixed_recycler, max_draft=FIXED_SAM_MAX_DRAFT, tree_nodes=FIXED_SAM_TREE_NODES
            ),
        ),
        "heads": lambda: HeadsEngineGenerate(
            "heads",
            f"this engine with `HeadsDrafter` alone (Medusa-1 heads `{Path(heads).name}`), {policy_note}",
            Path(heads),
            HeadsDrafter,
            policy=policy(),
        ),
        "sam+heads": lambda: HeadsEngineGenerate(
            "sam+heads",
            f"`SamDrafter` with `HeadsDrafter` as the fallback, {policy_note}",
            Path(heads),
            lambda trained: SamDrafter(automaton, fallback=HeadsDrafter(trained)),
            policy=policy(),
        ),
    }

    def chain_cap(name: str) -> Method:
        cap = int(_CHAIN_CAP.fullmatch(name).group(1))
        return EngineGenerate(
            name,
            f"`SamDrafter` chains of at most {cap} tokens, no tree, no fallback, every drafted node verified (no policy)",
            lambda: SamDrafter(automaton, use_tree=False, max_draft=cap),
        )

    if CACHE_METHODS.intersection(names):
        factories.update(cache_methods(automaton, policy, policy_note))
    suffix_documents: list[Any] = []
    if SUFFIX_METHODS.intersection(names):
        if corpus_documents is None:
            raise ValueError("the suffix methods need the static corpus's documents")
        suffix_documents = list(corpus_documents())
    for name in SUFFIX_METHODS:
        factories[name] = lambda name=name: suffix_method(
            name, suffix_documents, serving=serving, policy=policy() if name == "suffix+policy" else None, policy_note=policy_note
        )

    methods = [factories[name]() if name in factories else chain_cap(name) for name in names]
    for method in methods:
        method.reference_profile = reference_profile
    return methods


def suffix_method(name: str, documents: Sequence[Any], *, serving: bool, policy: Any, policy_note: str = "cost-aware policy") -> Method:
    """The SuffixDecoding method ``name`` (one of :data:`SUFFIX_METHODS`) with ``documents`` in its global tree.

    One drafter serves the whole run. ``serving``: it keeps each finished response in its global tree
    (its warm-up call does not); otherwise each response is evicted when its question is done.
    """
    from sam_decoding.benchmark.suffix_decoding import (
        ARCTIC_INFERENCE_VERSION,
        DEFAULT_MAX_SPEC_FACTOR,
        DEFAULT_MAX_SPEC_TOKENS,
        DEFAULT_MIN_TOKEN_PROB,
        SuffixDecodingDrafter,
    )

    use_tree = name != "suffix"
    tokens = sum(len(document) for document in documents)
    description = (
        f"SuffixDecoding (arctic-inference {ARCTIC_INFERENCE_VERSION}) {'tree' if use_tree else 'chain'} of at most "
        f"{DEFAULT_MAX_SPEC_TOKENS} tokens (factor {DEFAULT_MAX_SPEC_FACTOR}, min probability {DEFAULT_MIN_TOKEN_PROB}), "
        f"the static corpus's {len(documents)} documents ({tokens:,} tokens) in its global tree, "
        + ("keeping every response it produces" if serving else "its own responses evicted after each question")
        + (f", {policy_note}" if policy is not None else ", every drafted node verified (no policy)")
    )
    return EngineGenerate(
        name,
        description,
        lambda: SuffixDecodingDrafter(documents, use_tree=use_tree, learn=serving),
        persistent=True,
        policy=policy,
        make_warmup_drafter=(lambda: SuffixDecodingDrafter(documents, use_tree=use_tree)) if serving else None,
    )


def cache_methods(automaton: Any, make_policy: Callable[[], Any], policy_note: str) -> dict[str, Callable[[], Method]]:
    """Factories of the :data:`CACHE_METHODS`: ``sam`` and ``sam+tr`` drafting also from a response cache of their own.

    Each method records its finished responses into its own in-memory :class:`~sam_decoding.ResponseCache`
    (default budget) and drafts from it for later questions; its warm-up call records nothing. ``sam+tr+cache``
    has a Token Recycling table of its own, so that ``sam+tr`` in the same run learns nothing from it.
    """
    from sam_decoding import ResponseCache
    from sam_decoding.drafters import SamDrafter, TokenRecyclingDrafter

    # The cache holds ids of the corpus's tokenizer (SamDrafter refuses a cache of another one).
    fingerprint = automaton.tokenizer_fingerprint if automaton is not None else ""

    def method(name: str, description: str, fallback: Any) -> Method:
        responses = ResponseCache(tokenizer_fingerprint=fingerprint)
        return EngineGenerate(
            name,
            f"{description}, every finished response recorded in a response cache of up to {responses.max_tokens:,} tokens "
            f"that later questions draft from, {policy_note}",
            lambda: SamDrafter(automaton, fallback=fallback, responses=responses),
            policy=make_policy(),
            make_warmup_drafter=lambda: SamDrafter(automaton, fallback=fallback),
        )

    return {
        "sam+cache": lambda: method("sam+cache", "`SamDrafter`: static corpus + dynamic automaton, no fallback", None),
        "sam+tr+cache": lambda: method(
            "sam+tr+cache", "`SamDrafter` with a Token Recycling fallback of its own", TokenRecyclingDrafter()
        ),
    }
