"""The decoding methods a benchmark compares, each behind one small interface.

All are greedy and should emit exactly vanilla's tokens. Methods that use this package's engine
report forward passes from its step count; the transformers baselines count the model's forward
calls with a hook. Either way a "forward pass" here is one that emits tokens, so MAT (new tokens
per forward pass) is comparable; the engine's separate prompt prefill is not counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Every method, in the order reports list them.
METHOD_NAMES: tuple[str, ...] = ("vanilla", "hf-prompt-lookup", "pld", "token-recycling", "sam", "sam+tr", "heads", "sam+heads")
#: Methods that draft from a static corpus and so need one built for the suite.
STATIC_CORPUS_METHODS: frozenset[str] = frozenset({"sam", "sam+tr", "sam+heads"})
#: Methods that draft with trained heads and so need a heads file for the model.
HEADS_METHODS: frozenset[str] = frozenset({"heads", "sam+heads"})
#: Draft length of the prompt-lookup methods, in tokens (transformers' ``prompt_lookup_num_tokens``).
PROMPT_LOOKUP_TOKENS = 10


@dataclass(frozen=True)
class Outcome:
    """What one method produced for one prompt: the new tokens and how many forward passes emitted them."""

    tokens: list[int]
    forward_passes: int
    drafted_by_source: dict[str, int] = field(default_factory=dict)
    accepted_by_source: dict[str, int] = field(default_factory=dict)


class Method(ABC):
    """A way to generate greedily; ``run`` is what the runner times."""

    name: str = ""
    description: str = ""

    @abstractmethod
    def run(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> Outcome:
        """Generate up to ``max_new_tokens`` tokens after ``input_ids`` (``[1, length]``)."""


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
        return Outcome(output[0, input_ids.shape[1] :].tolist(), counter.calls)


class EngineGenerate(Method):
    """This package's speculative ``generate`` with a drafter made fresh for each prompt (or kept, if ``persistent``)."""

    def __init__(self, name: str, description: str, make_drafter: Any, *, persistent: bool = False) -> None:
        self.name = name
        self.description = description
        self._make_drafter = make_drafter
        self._drafter = make_drafter() if persistent else None

    def run(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> Outcome:
        from sam_decoding.generation import generate

        drafter = self._drafter if self._drafter is not None else self._make_drafter()
        result = generate(model, input_ids, drafter=drafter, max_new_tokens=max_new_tokens, eos_token_id=list(eos))
        stats = result.stats
        return Outcome(
            result.new_tokens.tolist(),
            stats.steps,
            dict(stats.drafted_by_source),
            dict(stats.accepted_by_source),
        )


class HeadsEngineGenerate(EngineGenerate):
    """:class:`EngineGenerate` whose drafter uses heads bound to the benchmarked model (read on the first run)."""

    def __init__(self, name: str, description: str, heads_file: Path, make_drafter: Any) -> None:
        self._heads_file = heads_file
        self._heads: Any = None
        super().__init__(name, description, lambda: make_drafter(self._heads))

    def run(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> Outcome:
        if self._heads is None:
            from sam_decoding.heads import MedusaHeads

            self._heads = MedusaHeads.load(self._heads_file, model)
        return super().run(model, input_ids, max_new_tokens=max_new_tokens, eos=eos)


def make_methods(names: Sequence[str], static_corpus: Path | None, *, heads: Path | None = None) -> list[Method]:
    """The methods called ``names``, in that order; ``static_corpus`` is needed by the ``sam`` methods.

    ``heads`` is the heads file of the ``heads`` methods (default: the one shipped for the default model).

    Token Recycling keeps its adjacency table across prompts, as in its paper (one drafter per method
    for the whole run); the SAM drafters are made fresh for each prompt, their dynamic automaton
    being per request anyway.
    """
    from sam_decoding import StaticAutomaton
    from sam_decoding.drafters import HeadsDrafter, PromptLookupDrafter, SamDrafter, TokenRecyclingDrafter

    unknown = [name for name in names if name not in METHOD_NAMES]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_NAMES)}")
    automaton = None
    if STATIC_CORPUS_METHODS.intersection(names):
        if static_corpus is None:
            raise ValueError("the sam methods need a static corpus")
        automaton = StaticAutomaton.load(static_corpus)
    if HEADS_METHODS.intersection(names) and heads is None:
        from sam_decoding.heads.default import default_heads_path

        heads = default_heads_path()
    recycler_for_sam = TokenRecyclingDrafter()
    # The drafter's own defaults go into the report, so a table says which parameters produced it.
    probe = SamDrafter(None)
    sam_parameters = (
        f"l_bias={probe.l_bias}, l_threshold={probe.l_threshold}, max_draft={probe.max_draft}, "
        + (f"static tree of {probe.tree_nodes} nodes" if probe.use_tree else "static chain")
    )
    factories = {
        "vanilla": lambda: TransformersGenerate("vanilla", "transformers `generate`, greedy"),
        "hf-prompt-lookup": lambda: TransformersGenerate(
            "hf-prompt-lookup",
            f"transformers prompt lookup decoding (`prompt_lookup_num_tokens={PROMPT_LOOKUP_TOKENS}`)",
            prompt_lookup_num_tokens=PROMPT_LOOKUP_TOKENS,
        ),
        "pld": lambda: EngineGenerate(
            "pld",
            f"this engine with `PromptLookupDrafter` ({PROMPT_LOOKUP_TOKENS}-token drafts)",
            lambda: PromptLookupDrafter(num_tokens=PROMPT_LOOKUP_TOKENS),
        ),
        "token-recycling": lambda: EngineGenerate(
            "token-recycling", "this engine with `TokenRecyclingDrafter` alone", TokenRecyclingDrafter, persistent=True
        ),
        "sam": lambda: EngineGenerate(
            "sam", f"`SamDrafter` ({sam_parameters}): static corpus + dynamic automaton, no fallback", lambda: SamDrafter(automaton)
        ),
        "sam+tr": lambda: EngineGenerate(
            "sam+tr",
            "`SamDrafter` with Token Recycling as the fallback",
            lambda: SamDrafter(automaton, fallback=recycler_for_sam),
        ),
        "heads": lambda: HeadsEngineGenerate(
            "heads", f"this engine with `HeadsDrafter` alone (Medusa-1 heads `{Path(heads).name}`)", Path(heads), HeadsDrafter
        ),
        "sam+heads": lambda: HeadsEngineGenerate(
            "sam+heads",
            "`SamDrafter` with `HeadsDrafter` as the fallback",
            Path(heads),
            lambda trained: SamDrafter(automaton, fallback=HeadsDrafter(trained)),
        ),
    }
    return [factories[name]() for name in names]
