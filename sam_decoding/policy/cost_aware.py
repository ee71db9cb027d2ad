"""The default verification policy: size every step's draft by measured cost and calibrated acceptance."""

from __future__ import annotations

import os
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sam_decoding.drafters.base import Draft
from sam_decoding.policy.acceptance import AcceptanceModel, NodeEstimates
from sam_decoding.policy.cost_profile import CostProfile, calibrate, hardware_key
from sam_decoding.policy.hindsight import Hindsight
from sam_decoding.policy.selection import best_subtree

#: Largest number of draft nodes one step may verify.
DEFAULT_MAX_NODES = 256
#: Pseudo-tokens behind the per-call acceptance correction: how many accepted tokens a call must
#: see before its own record outweighs the calibrated estimates.
CALL_CORRECTION_STRENGTH = 4.0
#: Environment variable: set to ``0`` to keep cost profiles in memory only (no read, no write).
PROFILE_CACHE_ENV = "SAM_DECODING_COST_PROFILE_CACHE"
_OVERHEAD_SMOOTHING = 0.1


@dataclass(frozen=True)
class Plan:
    """What a step verifies and what the policy expects of it.

    Attributes:
        draft: The kept nodes (a sub-draft closed under parents; empty for a plain step).
        estimates: Acceptance estimates of the kept nodes.
        expected_accepted: Expected accepted draft tokens.
        expected_rate: Expected emitted tokens per second of the step.
        proposal: The whole draft the kept nodes were chosen from.
        proposal_estimates: Acceptance estimates of every node of ``proposal``.
        keep: Indices of the kept nodes in ``proposal``.
    """

    draft: Draft
    estimates: NodeEstimates
    expected_accepted: float
    expected_rate: float
    proposal: Draft
    proposal_estimates: NodeEstimates
    keep: np.ndarray


def profile_path(model: Any) -> Path | None:
    """Where ``model``'s cost profile is cached on disk, or ``None`` if the cache is disabled."""
    from sam_decoding.models import cache_dir

    if os.environ.get(PROFILE_CACHE_ENV, "1") == "0":
        return None
    return cache_dir() / "cost_profiles" / f"{hardware_key(model)}.json"


@dataclass
class CostAwarePolicy:
    """Keeps, each step, the draft subtree that maximizes expected emitted tokens per second.

    Args:
        profile: Verification cost ``t(q, L)``; ``None``: load this model's cached profile, or
            calibrate one (a timed sweep of about two seconds) on first use.
        acceptance: The acceptance model (learns across calls of this policy).
        max_nodes: Most draft nodes one step verifies.
        calibration_budget_seconds: Time the first calibration may take.
        learn_in_hindsight: Also learn from the nodes no step verified, judged against the text once
            it reaches them (see :mod:`sam_decoding.policy.hindsight`); ``False``: verified nodes only.
    """

    profile: CostProfile | None = None
    acceptance: AcceptanceModel = field(default_factory=AcceptanceModel)
    max_nodes: int = DEFAULT_MAX_NODES
    calibration_budget_seconds: float = 2.0
    learn_in_hindsight: bool = True
    overhead_seconds: float = 0.0
    # This call's accepted draft tokens and what the calibrated estimates predicted for them.
    call_accepted: float = 0.0
    call_predicted: float = 0.0
    hindsight: Hindsight = field(init=False)

    def __post_init__(self) -> None:
        self.hindsight = Hindsight(self.acceptance)

    @classmethod
    def shared(cls, model: Any) -> CostAwarePolicy:
        """The policy ``generate(policy="auto")`` uses for ``model``: one per model object, learning across calls."""
        policy = _SHARED.get(model)
        if policy is None:
            policy = _SHARED[model] = cls()
        return policy

    def prepare(self, model: Any) -> float:
        """Start a generate call: give the policy ``model``'s cost profile if it has none; return
        calibration seconds (0 if none ran)."""
        self.call_accepted = self.call_predicted = 0.0
        self.hindsight.reset()
        if self.profile is not None:
            return 0.0
        self.profile, spent = model_profile(model, self.calibration_budget_seconds)
        return spent

    def select(self, draft: Draft, context_length: int, draft_seconds: float) -> Plan:
        """The part of ``draft`` worth verifying over a cache of ``context_length - 1`` tokens."""
        assert self.profile is not None, "prepare(model) first"
        estimates = self.acceptance.estimate(draft)
        costs = self.profile.curve(context_length, min(len(draft), self.max_nodes) + 1)
        path_probabilities = np.minimum(estimates.path_probabilities * self.call_correction, 1.0)
        choice = best_subtree(path_probabilities, costs, draft_seconds + self.overhead_seconds)
        keep = choice.keep
        if len(keep) == len(draft):
            kept, kept_estimates = draft, estimates
        else:
            kept, kept_estimates = draft.subset(keep), estimates.subset(keep)
        return Plan(kept, kept_estimates, choice.expected_accepted, choice.expected_rate, draft, estimates, keep)

    def choose(self, candidates: list[Draft], context_length: int, draft_seconds: float) -> Plan:
        """The best plan over alternative drafts (e.g. dynamic, static and fallback): the highest expected rate."""
        plans = [self.select(draft, context_length, draft_seconds) for draft in candidates if len(draft)]
        if not plans:
            return self.select(Draft.empty(candidates[0].source if candidates else "none"), context_length, draft_seconds)
        chosen = max(plans, key=lambda plan: plan.expected_rate)
        if self.learn_in_hindsight:
            for plan in plans:
                verified = np.zeros(len(plan.proposal), dtype=bool)
                if plan is chosen:
                    verified[plan.keep] = True
                self.hindsight.record(plan.proposal, plan.proposal_estimates, verified)
        return chosen

    @property
    def call_correction(self) -> float:
        """How far this call's drafts beat (> 1) or fall short of (< 1) the calibrated estimates so far.

        The estimates are calibrated over every call, but how predictable a text is varies from one
        request to the next (open writing vs code); the selection scales them by this ratio, shrunk
        to 1 while the call has seen little.
        """
        k = CALL_CORRECTION_STRENGTH
        return (self.call_accepted + k) / (self.call_predicted + k)

    def observe_cost(self, q: int, cache_length: int, seconds: float) -> None:
        """Refine the cost profile with one real verification pass."""
        if self.profile is not None:
            self.profile.observe(q, cache_length, seconds)

    def observe_overhead(self, seconds: float) -> None:
        """Track the per-step time outside the forward pass (drafting, walking, bookkeeping)."""
        self.overhead_seconds += _OVERHEAD_SMOOTHING * (seconds - self.overhead_seconds)

    def learn(self, plan: Plan, path: list[int], last_child: int | None) -> None:
        """Learn from one step: ``path`` = input indices whose predictions were emitted (root 0 first),
        ``last_child`` = the input index of the draft node matching the last emitted token, if any."""
        draft = plan.draft
        if not len(draft):
            return
        on_path = np.zeros(len(draft) + 1, dtype=bool)
        on_path[path] = True
        parents = np.arange(len(draft)) - 1 if draft.parents is None else draft.parents.astype(np.int64)
        judged = on_path[parents + 1]
        accepted = on_path[1:].copy()
        if last_child is not None:
            accepted[last_child - 1] = True
        self.acceptance.learn(plan.estimates, judged, accepted)
        self.call_accepted += float(accepted.sum())
        self.call_predicted += float(plan.estimates.path_probabilities.sum())

    def advance(self, emitted: Any) -> None:
        """A step emitted ``emitted`` (token ids, after :meth:`learn`): judge earlier proposals the text now covers."""
        if self.learn_in_hindsight:
            self.hindsight.advance(emitted)

    def finish(self) -> None:
        """End of a generate call: learn what the text tells of proposals still waiting; save the refined
        cost profile (if it has a file)."""
        if self.learn_in_hindsight:
            self.hindsight.flush()
        if self.profile is not None:
            self.profile.save_if_changed()

    def report(self) -> dict[str, Any]:
        """Calibration (predicted vs observed acceptance) and the cost table, as JSON-friendly values."""
        return {
            "acceptance_calibration": self.acceptance.calibration(),
            "cost_profile": self.profile.table() if self.profile is not None else None,
            "calibration_seconds": self.profile.calibration_seconds if self.profile is not None else 0.0,
        }


_SHARED: weakref.WeakKeyDictionary[Any, CostAwarePolicy] = weakref.WeakKeyDictionary()
_PROFILES: weakref.WeakKeyDictionary[Any, CostProfile] = weakref.WeakKeyDictionary()


def model_profile(model: Any, budget_seconds: float = 2.0) -> tuple[CostProfile, float]:
    """``model``'s cost profile, shared by every policy that verifies with it, and the seconds spent calibrating.

    Loaded from the on-disk cache when a profile for this model, device, dtype, thread count,
    torch version and processor exists there; otherwise calibrated (about ``budget_seconds``) and saved.
    """
    profile = _PROFILES.get(model)
    if profile is not None:
        return profile, 0.0
    path = profile_path(model)
    spent = 0.0
    if path is not None and path.is_file():
        try:
            profile = CostProfile.from_json(_read_json(path), path=path)
        except ValueError:
            profile = None  # an older or damaged cache file: measure again and overwrite it
    if profile is None:
        profile = CostProfile(hardware_key(model), path=path)
        spent = calibrate(model, profile, budget_seconds=budget_seconds)
        profile.save_if_changed()
    _PROFILES[model] = profile
    return profile, spent


def reset_profile(model: Any) -> None:
    """Forget ``model``'s cost profile, in memory and on disk; the next use calibrates afresh."""
    _PROFILES.pop(model, None)
    path = profile_path(model)
    if path is not None and path.is_file():
        path.unlink()


def _read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"unreadable cost profile {path}: {error}") from None
