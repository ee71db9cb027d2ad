"""The kinds of method a benchmark runs, behind one small interface: transformers' own
``generate`` (the baselines), this package's engine with a drafter, and the engine with trained heads.

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

    @property
    def _verification(self) -> Any:
        """What ``generate`` is given: this method's policy, or ``"all"`` (every drafted node verified)."""
        return self.policy if self.policy is not None else "all"

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

        generate(model, input_ids, drafter=self._make_warmup_drafter(), max_new_tokens=max_new_tokens, eos_token_id=list(eos), policy=self._verification)

    def run(self, model: Any, input_ids: torch.Tensor, *, max_new_tokens: int, eos: Sequence[int]) -> Outcome:
        from sam_decoding.generation import generate

        drafter = self._drafter if self._drafter is not None else self._make_drafter()
        result = generate(
            model, input_ids, drafter=drafter, max_new_tokens=max_new_tokens, eos_token_id=list(eos), policy=self._verification
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
