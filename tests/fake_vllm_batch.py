"""vLLM's persistent batch as a proposer sees it, without an engine: rows of token ids that move when
requests leave, verified greedily against the text each row's request will say. Shared by
tests/test_vllm.py and bench/vllm_propose_bench.py."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


class FakeBatch:
    """vLLM's persistent batch as the proposer sees it: rows of token ids that move when requests leave."""

    def __init__(self, rows: int = 32, width: int = 4096) -> None:
        self.token_ids = np.zeros((rows, width), dtype=np.int32)
        self.lengths = np.zeros(rows, dtype=np.int32)
        self.texts: list[np.ndarray] = []  # each row's whole text (what the target will say)
        self.sampled: list[list[int]] = []

    def add(self, text: np.ndarray, prompt_length: int) -> None:
        row = len(self.texts)
        self.texts.append(text)
        self.token_ids[row, : prompt_length + 1] = text[: prompt_length + 1]
        self.lengths[row] = prompt_length + 1
        self.sampled.append([int(text[prompt_length])])

    def remove(self, row: int) -> None:
        """Drop ``row``; the last row moves into its place (vLLM's condense)."""
        last = len(self.texts) - 1
        if row != last:
            self.token_ids[row] = self.token_ids[last]
            self.lengths[row] = self.lengths[last]
            self.texts[row], self.sampled[row] = self.texts[last], self.sampled[last]
        self.texts.pop()
        self.sampled.pop()
        self.lengths[last] = 0

    def finished(self, row: int) -> bool:
        return int(self.lengths[row]) >= len(self.texts[row])

    def step(self, proposer: Any, leave: Callable[[int], bool] = lambda row: False) -> None:
        """One engine step as vLLM orders it: the proposer sees the last step's tokens (a finished
        request's end token too), then finished requests (and those ``leave`` picks) leave the
        batch, then the target verifies the drafts of the rest."""
        drafts = self.propose(proposer)
        for row in reversed(range(len(self.texts))):
            if self.finished(row) or leave(row):
                drafts[row] = drafts[len(self.texts) - 1]
                drafts.pop()
                self.remove(row)
        self.verify(drafts)

    def propose(self, proposer: Any) -> list[list[int]]:
        rows = len(self.texts)
        return proposer.propose(self.sampled[:rows], self.lengths, self.token_ids)

    def verify(self, drafts: list[list[int]]) -> None:
        """Greedy verification against each row's text: accepted draft tokens plus one."""
        for row, draft in enumerate(drafts):
            text, length = self.texts[row], int(self.lengths[row])
            accepted = 0
            while accepted < len(draft) and length + accepted < len(text) - 1 and draft[accepted] == text[length + accepted]:
                accepted += 1
            new = text[length : min(length + accepted + 1, len(text))]
            self.token_ids[row, length : length + len(new)] = new
            self.lengths[row] = length + len(new)
            self.sampled[row] = [int(token) for token in new]

    def remove_finished(self) -> None:
        """Drop every row whose request has said its whole text."""
        for row in reversed(range(len(self.texts))):
            if self.finished(row):
                self.remove(row)
