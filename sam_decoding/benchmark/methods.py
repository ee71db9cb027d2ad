"""The decoding methods a benchmark compares, by name: which exist, which a run may combine, and
how each is made (its kind of generation lives in :mod:`~sam_decoding.benchmark.method_kinds`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sam_decoding.benchmark.method_kinds import (
    ENGINE_STATS,
    EngineGenerate,
    HeadsEngineGenerate,
    Method,
    Outcome,
    TransformersGenerate,
    modelled_seconds,
)

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


def check_method_names(names: Sequence[str], *, serving: bool) -> None:
    """Raise ``ValueError`` unless every name is a method and the set can run (``serving`` for the
    +cache methods). The CLI calls it before loading anything; :func:`make_methods` calls it again."""
    unknown = [name for name in names if not is_method(name)]
    if unknown or not names:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHOD_NAMES)} "
            "or sam-chainN-fixed"
        )
    if CACHE_METHODS.intersection(names) and not serving:
        raise ValueError("the +cache methods learn from earlier responses: they run only in a serving run (--serving)")


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
    check_method_names(names, serving=serving)
    automaton = _static_automaton(names, static_corpus)
    if HEADS_METHODS.intersection(names) and heads is None:
        from sam_decoding.heads.default import default_heads_path

        heads = default_heads_path()
    factories = _factories(automaton, cost_profile, heads)
    if CACHE_METHODS.intersection(names):
        factories.update(cache_methods(automaton, _policy_maker(cost_profile), _policy_note(cost_profile)))
    factories.update(_suffix_factories(names, corpus_documents, serving, cost_profile))
    methods = [factories[name]() if name in factories else _chain_cap(name, automaton) for name in names]
    for method in methods:
        method.reference_profile = cost_profile if reference_profile is None else reference_profile
    return methods


def _static_automaton(names: Sequence[str], static_corpus: Path | None) -> Any:
    """The corpus the sam methods draft from, loaded once for all of them (``None`` if none runs)."""
    from sam_decoding.shards import load_corpus

    if not any(needs_static_corpus(name) for name in names):
        return None
    if static_corpus is None:
        raise ValueError("the sam methods need a static corpus")
    return load_corpus(static_corpus)


def _policy_maker(cost_profile: Any) -> Callable[[], Any]:
    """Makes a fresh cost-aware policy (one per method) under ``cost_profile``."""
    from sam_decoding.policy import CostAwarePolicy

    return lambda: CostAwarePolicy(profile=cost_profile)


def _policy_note(cost_profile: Any) -> str:
    if cost_profile is None:
        return "cost-aware policy"
    return f"cost-aware policy under the given cost profile `{cost_profile.key}`"


def _factories(automaton: Any, cost_profile: Any, heads: Path | None) -> dict[str, Callable[[], Any]]:
    """A maker per fixed method name."""
    from sam_decoding.drafters import HeadsDrafter, PromptLookupDrafter, SamDrafter, TokenRecyclingDrafter

    policy = _policy_maker(cost_profile)
    recycler_for_sam = TokenRecyclingDrafter()
    fixed_recycler = TokenRecyclingDrafter(max_nodes=FIXED_TR_NODES)
    # The drafter's own defaults go into the report, so a table says which parameters produced it.
    probe = SamDrafter(None)
    sam_parameters = (
        f"max_draft={probe.max_draft}, min_probability={probe.min_probability}, "
        + (f"trees of {probe.tree_nodes} nodes per source" if probe.use_tree else "chains")
    )
    policy_note = _policy_note(cost_profile)
    return {
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


def _chain_cap(name: str, automaton: Any) -> Method:
    """A ``sam-chainN-fixed`` method: chains of at most N tokens, every node verified."""
    from sam_decoding.drafters import SamDrafter

    cap = int(_CHAIN_CAP.fullmatch(name).group(1))
    return EngineGenerate(
        name,
        f"`SamDrafter` chains of at most {cap} tokens, no tree, no fallback, every drafted node verified (no policy)",
        lambda: SamDrafter(automaton, use_tree=False, max_draft=cap),
    )


def _suffix_factories(names: Sequence[str], corpus_documents: Callable[[], Sequence[Any]] | None, serving: bool,
                      cost_profile: Any) -> dict[str, Callable[[], Any]]:
    """Makers of the SuffixDecoding methods, over the corpus's documents (read only if one runs)."""
    policy = _policy_maker(cost_profile)
    documents: list[Any] = []
    if SUFFIX_METHODS.intersection(names):
        if corpus_documents is None:
            raise ValueError("the suffix methods need the static corpus's documents")
        documents = list(corpus_documents())
    note = _policy_note(cost_profile)
    return {
        name: lambda name=name: suffix_method(
            name, documents, serving=serving,
            policy=policy() if name == "suffix+policy" else None, policy_note=note,
        )
        for name in SUFFIX_METHODS
    }


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
    from sam_decoding.response_cache import ResponseCache
    from sam_decoding.drafters import SamDrafter, TokenRecyclingDrafter

    # The cache holds ids of the corpus's tokenizer (SamDrafter refuses a cache of another one).
    fingerprint = automaton.tokenizer_fingerprint if automaton is not None else ""

    def method(name: str, description: str, fallback: Any) -> Method:
        responses = ResponseCache(tokenizer_fingerprint=fingerprint)
        return EngineGenerate(
            name,
            f"{description}, every finished response recorded in a response cache of up to {responses.max_tokens:,} tokens "
            f"that later questions draft from, {policy_note}",
            lambda: SamDrafter(automaton, fallback=fallback, response_cache=responses),
            policy=make_policy(),
            make_warmup_drafter=lambda: SamDrafter(automaton, fallback=fallback),
        )

    return {
        "sam+cache": lambda: method("sam+cache", "`SamDrafter`: static corpus + dynamic automaton, no fallback", None),
        "sam+tr+cache": lambda: method(
            "sam+tr+cache", "`SamDrafter` with a Token Recycling fallback of its own", TokenRecyclingDrafter()
        ),
    }


__all__ = [
    "CACHE_METHODS",
    "DEFAULT_METHODS",
    "ENGINE_STATS",
    "EngineGenerate",
    "HeadsEngineGenerate",
    "METHOD_NAMES",
    "Method",
    "Outcome",
    "QUICK_METHOD_NAMES",
    "SUFFIX_METHODS",
    "TransformersGenerate",
    "cache_methods",
    "check_method_names",
    "is_method",
    "make_methods",
    "modelled_seconds",
    "needs_static_corpus",
    "suffix_method",
    "unavailable_methods",
]
