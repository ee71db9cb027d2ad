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
    tokens: list[int]
    parents: list[int]
    depths: list[int]
    estimates: NodeEstimates
    verified: np.ndarray  # bool per node: verified at its step (learned already)

    @property
    def end(self) -> int:
        """Length of text needed to judge every node."""
        return self.position + max(self.depths)


class Hindsight:
    """Keeps one generate call's unverified proposals and teaches ``acceptance`` their outcomes."""

    def __init__(self, acceptance: AcceptanceModel) -> None:
        self.acceptance = acceptance
        self._text: list[int] = []
        self._pending: list[_Proposal] = []

    def reset(self) -> None:
        """Start a new call (a new text)."""
        self._text.clear()
        self._pending.clear()

    def record(self, draft: Draft, estimates: NodeEstimates, verified: np.ndarray) -> None:
        """Remember ``draft``, proposed after the text so far; ``verified`` marks the nodes verified now."""
        if len(draft) == 0 or bool(verified.all()):
            return
        parents = list(range(-1, len(draft) - 1)) if draft.parents is None else draft.parents.tolist()
        depths: list[int] = []
        for parent in parents:
            depths.append(1 if parent < 0 else depths[parent] + 1)
        self._pending.append(_Proposal(len(self._text), draft.tokens.tolist(), parents, depths, estimates, verified))

    def advance(self, emitted: Sequence[int]) -> None:
        """Extend the text by ``emitted`` and judge the proposals it now covers entirely."""
        self._text.extend(emitted)
        ready = [proposal for proposal in self._pending if proposal.end <= len(self._text)]
        if ready:
            self._pending = [proposal for proposal in self._pending if proposal.end > len(self._text)]
            for proposal in ready:
                self._judge(proposal)

    def flush(self) -> None:
        """End of the call: judge what the text covers of the proposals still waiting."""
        for proposal in self._pending:
            self._judge(proposal)
        self._pending.clear()

    def _judge(self, proposal: _Proposal) -> None:
        text, start = self._text, proposal.position
        count = len(proposal.tokens)
        judged = np.zeros(count, dtype=bool)
        accepted = np.zeros(count, dtype=bool)
        for node, (parent, token, depth) in enumerate(zip(proposal.parents, proposal.tokens, proposal.depths)):
            index = start + depth - 1
            if index < len(text) and (parent < 0 or accepted[parent]):
                judged[node] = True
                accepted[node] = text[index] == token
        judged &= ~proposal.verified
        if judged.any():
            self.acceptance.learn(proposal.estimates, judged, accepted)
