"""What one speculative ``generate`` call did: counters, timings and the policy's bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class GenerationStats:
    """Counters and timings of one :func:`~sam_decoding.generate` call.

    Attributes:
        prompt_tokens: Prompt length, in tokens.
        new_tokens: Tokens generated (emitted after the prompt).
        steps: Verification forward passes (one per step; the prefill is not a step).
        proposed_tokens: Draft tokens the drafter proposed, before the policy chose what to verify.
        drafted_tokens: Draft tokens fed to the target across all steps.
        accepted_tokens: Draft tokens that were emitted (``new_tokens`` minus one target-chosen token per step).
        expected_accepted_tokens: The policy's prediction of ``accepted_tokens`` (sum over steps of
            the path probabilities of the verified nodes); 0 when no policy ran.
        verified_sizes: Histogram of tokens fed per verification pass (``q`` = draft tokens + 1): ``{q: steps}``.
        drafts_by_source: Steps whose draft came from each source (``"dynamic"``, ``"static"``, ...).
        drafted_by_source: Draft tokens fed, per source.
        accepted_by_source: Draft tokens emitted, per source.
        prefill_seconds: Wall time of the prompt's forward pass, in seconds.
        draft_seconds: Wall time spent in the drafter (propose + accept), in seconds.
        policy_seconds: Wall time spent choosing what to verify and learning from the outcome, in seconds.
        verify_seconds: Wall time of the verification passes, acceptance walks and cache pruning, in seconds.
        total_seconds: Wall time of the whole call, in seconds.
        calibration_seconds: Wall time of the cost profile's first calibration, if this call ran it
            (before the call's timing starts; not part of ``total_seconds``), in seconds.
    """

    prompt_tokens: int = 0
    new_tokens: int = 0
    steps: int = 0
    proposed_tokens: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    expected_accepted_tokens: float = 0.0
    verified_sizes: dict[int, int] = field(default_factory=dict)
    drafts_by_source: dict[str, int] = field(default_factory=dict)
    drafted_by_source: dict[str, int] = field(default_factory=dict)
    accepted_by_source: dict[str, int] = field(default_factory=dict)
    prefill_seconds: float = 0.0
    draft_seconds: float = 0.0
    policy_seconds: float = 0.0
    verify_seconds: float = 0.0
    total_seconds: float = 0.0
    calibration_seconds: float = 0.0

    @property
    def mean_accepted_tokens(self) -> float:
        """MAT: tokens emitted per verification step (accepted draft tokens + the target's own token)."""
        return self.new_tokens / self.steps if self.steps else 0.0

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of wall time, prefill included."""
        return self.new_tokens / self.total_seconds if self.total_seconds > 0 else 0.0

    def count_step(self, source: str, fed: int, accepted: int, expected: float) -> None:
        """Record one verification step that fed ``fed`` draft tokens from ``source`` and accepted ``accepted``."""
        self.steps += 1
        self.drafted_tokens += fed
        self.accepted_tokens += accepted
        self.expected_accepted_tokens += expected
        self.verified_sizes[fed + 1] = self.verified_sizes.get(fed + 1, 0) + 1
        if fed:
            self.drafts_by_source[source] = self.drafts_by_source.get(source, 0) + 1
            self.drafted_by_source[source] = self.drafted_by_source.get(source, 0) + fed
            self.accepted_by_source[source] = self.accepted_by_source.get(source, 0) + accepted

    def as_dict(self) -> dict[str, Any]:
        """All counters, timings and derived rates as plain JSON-friendly values."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["verified_sizes"] = {str(q): n for q, n in sorted(self.verified_sizes.items())}
        data["mean_accepted_tokens"] = self.mean_accepted_tokens
        data["tokens_per_second"] = self.tokens_per_second
        return data


@dataclass
class GenerationResult:
    """Output of :func:`~sam_decoding.generate`.

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
