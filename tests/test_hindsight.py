"""Learning in hindsight: draft nodes no step verified are judged against the emitted text."""

from __future__ import annotations

import numpy as np
import pytest

from sam_decoding.drafters import Draft
from sam_decoding.policy import AcceptanceModel, CostAwarePolicy, CostProfile
from sam_decoding.policy.hindsight import Hindsight


def _learned(model: AcceptanceModel, estimates, node: int) -> tuple[float, float]:
    """(judged, accepted) counts of the fine cell of ``node``."""
    cell = estimates.cells[node]
    return model.judged[cell], model.accepted[cell]


def test_unverified_nodes_are_judged_along_the_text_and_verified_ones_are_left_alone() -> None:
    model = AcceptanceModel()
    hindsight = Hindsight(model)
    hindsight.advance([1, 2])  # text before the proposal
    draft = Draft.chain([10, 11, 12, 13], "chain", match_length=3)
    estimates = model.estimate(draft)
    hindsight.record(draft, estimates, np.array([True, False, False, False]))
    hindsight.advance([10, 11])
    assert model.judged.sum() == 0, "node 3 is not covered yet: the proposal waits"
    hindsight.advance([99, 13])
    # Node 0 was verified (learned at its step); node 1 matched; node 2 did not (99 != 12); node 3's
    # parent failed, so the target could not have accepted it: not judged.
    assert model.judged.sum() == 2 and model.accepted.sum() == 1
    assert _learned(model, estimates, 1) == (1, 1)
    assert _learned(model, estimates, 2)[0] >= 1


def test_a_tree_is_judged_branch_by_branch_and_flush_judges_what_the_text_reached() -> None:
    model = AcceptanceModel()
    hindsight = Hindsight(model)
    # root -> 0:(5) -> 2:(7) -> 3:(8);  root -> 1:(6)
    tree = Draft(np.array([5, 6, 7, 8]), np.array([-1, -1, 0, 2], dtype=np.int32), "tree")
    hindsight.record(tree, model.estimate(tree), np.zeros(4, dtype=bool))
    hindsight.advance([6])
    hindsight.advance([7])
    assert model.judged.sum() == 0
    hindsight.flush()  # the call ended before node 3's position
    # Node 0 (5 vs 6) rejected, node 1 (6) accepted; node 2's parent was rejected; node 3 unreachable.
    assert model.judged.sum() == 2 and model.accepted.sum() == 1


def _run_long_correct_chains(policy: CostAwarePolicy, steps: int) -> None:
    """Steps whose 12-token chain is always the true text, under a profile that verifies few nodes or none."""
    truth = list(range(1000, 1000 + 12 * steps + 12))
    position = 0
    policy.prepare(None)
    for _ in range(steps):
        draft = Draft.chain(truth[position : position + 12], "retrieval", match_length=2)
        plan = policy.choose([draft], 100, 0.0)
        kept = len(plan.draft)
        emitted = truth[position : position + kept + 1]  # every kept node accepted, then the target's own token
        policy.learn(plan, list(range(kept + 1)), None)
        policy.advance(emitted)
        position += kept + 1
    policy.finish()


@pytest.mark.parametrize("hindsight", [True, False])
def test_deep_nodes_the_policy_never_verifies_learn_their_acceptance_only_in_hindsight(hindsight: bool) -> None:
    # Each extra fed token costs more than a step: however sure the estimates, the policy verifies
    # nothing, so no cell learns from verification (nor, through the source's overall correction, from
    # shallower nodes).
    profile = CostProfile.synthetic(lambda q, length: 0.010 * (1 + 1.5 * (q - 1)), key="steep")
    policy = CostAwarePolicy(profile=profile, learn_in_hindsight=hindsight)
    probe = Draft.chain(list(range(12)), "retrieval", match_length=2)
    before = policy.acceptance.estimate(probe).probabilities[8]
    _run_long_correct_chains(policy, 40)
    after = policy.acceptance.estimate(probe).probabilities[8]
    if hindsight:
        assert after > 0.9 > before, "every deep node was right: its cell must have learned that"
    else:
        assert after == pytest.approx(before), "never verified: nothing learned"
