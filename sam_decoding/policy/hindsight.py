"""Judging, once the text has moved on, the draft nodes a step proposed but did not verify.

The acceptance model learns from verified nodes, and the policy verifies few deep ones, so the
cells of deep nodes hardly learn: on Spec-Bench-mini with SmolLM2-135M, nodes the dynamic automaton
drafted at depth 5 were estimated at 0.11 and turned out right 0.22 of the time, at depth 8 0.05
against 0.14; nodes of drafts the policy passed over, 0.08 against 0.20 at depth 1. Estimates that
stay low keep the policy from verifying the long drafts that would pay.

Every proposal can be judged after the fact. A node is *judged* when the emitted text follows its
path up to its parent, and *accepted* when the text's next token is its own: exactly what the
acceptance walk would have decided. Greedy, the emitted token is the target's argmax there;
sampling, it is a draw from the distribution the walk would have drawn from, given the same
prefix. Verified nodes are left out (the policy learned them at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sam_decoding.drafters.base import Draft
from sam_decoding.policy.acceptance import AcceptanceModel, NodeEstimates


@dataclass
class _Proposal:
    """A draft waiting for the text to reach its deepest node."""

    position: int  # tokens of the text before the draft's first node
    draft: Draft
    estimates: NodeEstimates
    verified: np.ndarray  # bool per node: verified at its step (learned already)
    end: int  # length of text needed to judge every node


class Hindsight:
    """Keeps one generate call's unverified proposals and teaches ``acceptance`` their outcomes."""

    def __init__(self, acceptance: AcceptanceModel) -> None:
        self.acceptance = acceptance
        self._text = np.empty(256, dtype=np.int64)
        self._length = 0
        self._pending: list[_Proposal] = []

    def reset(self) -> None:
        """Start a new call (a new text)."""
        self._length = 0
        self._pending.clear()

    def record(self, draft: Draft, estimates: NodeEstimates, verified: np.ndarray) -> None:
        """Remember ``draft``, proposed after the text so far; ``verified`` marks the nodes verified now."""
        if len(draft) and not verified.all():
            end = self._length + int(estimates.depths.max())
            self._pending.append(_Proposal(self._length, draft, estimates, verified, end))

    def advance(self, emitted: Sequence[int]) -> None:
        """Extend the text by ``emitted`` and judge the proposals it now covers entirely."""
        length = self._length + len(emitted)
        if length > len(self._text):
            self._text = np.concatenate((self._text, np.empty(max(length, len(self._text)), dtype=np.int64)))
        self._text[self._length : length] = emitted
        self._length = length
        if any(proposal.end <= length for proposal in self._pending):
            waiting = []
            for proposal in self._pending:
                if proposal.end <= length:
                    self._judge(proposal)
                else:
                    waiting.append(proposal)
            self._pending = waiting

    def flush(self) -> None:
        """End of the call: judge what the text covers of the proposals still waiting."""
        for proposal in self._pending:
            self._judge(proposal)
        self._pending.clear()

    def _judge(self, proposal: _Proposal) -> None:
        draft = proposal.draft
        index = proposal.position + proposal.estimates.depths - 1
        reached = index < self._length
        matches = reached & (draft.tokens == self._text[np.minimum(index, self._length - 1)])
        if draft.parents is None:
            accepted = np.logical_and.accumulate(matches)
            judged = reached & np.concatenate(([True], accepted[:-1]))
        else:
            accepted = matches.copy()
            judged = reached.copy()
            for node, parent in enumerate(draft.parents.tolist()):  # parents come before their children
                if parent >= 0 and not accepted[parent]:
                    judged[node] = accepted[node] = False
        judged &= ~proposal.verified
        if judged.any():
            self.acceptance.learn(proposal.estimates, judged, accepted)
