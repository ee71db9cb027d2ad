"""Greedy speculative output equals ``model.generate`` for any drafts at all (hypothesis).

An adversarial drafter draws every draft from hypothesis while generation runs: random trees,
duplicate siblings, drafts that are always wrong, the exact continuation (right, and deeper than
``max_new_tokens``), drafts containing EOS, empty drafts, and random per-node probabilities for the
policy. Prompts, lengths and EOS are drawn too. On tiny llama, qwen2 and gpt2, with the cost-aware
policy and without one, the output must equal plain greedy ``model.generate`` every time (up to
genuine floating-point ties, see ``assert_greedy_equal``).

The number of examples follows the hypothesis profile (``HYPOTHESIS_PROFILE=ci``: derandomized and
bounded), capped at ``MAX_EXAMPLES`` because each example runs the model twice.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sam_decoding.drafters import Draft, Drafter, Verified
from sam_decoding.generation import generate
from conftest import TINY_EOS, TINY_PAD, TINY_VOCAB

MAX_EXAMPLES = 20
KINDS = (
    "empty",
    "random_chain",
    "random_tree",
    "always_wrong",
    "truth_chain",
    "truth_tree",
    "duplicate_siblings",
    "eos_inside",
)
_TOKENS = st.integers(0, TINY_VOCAB - 1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


_WIDTH = 24  # most nodes of a drawn random part


@st.composite
def draft_specs(draw: st.DrawFn) -> dict:
    """Everything one adversarial draft is made of, drawn up front.

    The drafter turns a spec into a draft at propose time, using the true continuation where the
    kind needs it; nothing is drawn during generation, because how many steps a run takes depends
    on the cost-aware policy's timing-based choices, and hypothesis needs the same draws on replay.
    """
    size = draw(st.integers(1, _WIDTH), label="nodes")
    return {
        # The true path behind noise nodes is drawn most: accepting it keeps a non-contiguous
        # part of the cache, the subtlest thing the loop does.
        "kind": draw(st.sampled_from(KINDS + ("truth_tree",) * 4), label="draft kind"),
        # Depths past what may still be generated are on purpose: the loop must cut them.
        "depth": draw(st.integers(1, 20), label="depth"),
        "tokens": draw(st.lists(_TOKENS, min_size=size, max_size=size), label="tokens"),
        "parents": draw(st.lists(st.integers(0, _WIDTH), min_size=size, max_size=size), label="parents"),
        "offsets": draw(st.lists(st.integers(1, TINY_VOCAB - 1), min_size=20, max_size=20), label="wrong by"),
        "split": draw(st.integers(1, size), label="noise before the truth"),
        "position": draw(st.integers(0, 19), label="eos position"),
        "copies": draw(st.integers(2, 4), label="duplicate siblings"),
        "probabilities": draw(st.none() | st.lists(st.floats(0.0, 1.0), min_size=2 * _WIDTH + 20, max_size=2 * _WIDTH + 20)),
    }


class AdversarialDrafter(Drafter):
    """Proposes the drafts described by ``specs`` in turn (cycling); knows the true continuation, so
    a draft can be exactly right, right among noise, or always wrong.

    Args:
        specs: Drawn by :func:`draft_specs`.
        reference: Prompt plus the reference (greedy) output, token ids.
        eos: A token to plant inside drafts.
    """

    proposes_trees = True

    def __init__(self, specs: list[dict], reference: list[int], eos: int) -> None:
        self.specs = specs
        self.reference = reference
        self.eos = eos
        self.length = 0
        self.proposed = 0
        self.kinds: list[str] = []

    def begin(self, prompt_ids: np.ndarray) -> None:
        self.length = len(prompt_ids)

    def accept(self, tokens: np.ndarray, verified: Verified | None) -> None:
        self.length += len(tokens)

    def _truth(self, depth: int) -> list[int]:
        """The true next ``depth`` tokens, padded past the reference's end with arbitrary ones."""
        truth = self.reference[self.length : self.length + depth]
        return truth + [(7 * i + 3) % TINY_VOCAB for i in range(depth - len(truth))]

    @staticmethod
    def _random_tree(spec: dict, size: int) -> tuple[list[int], list[int]]:
        # Raw parent draws mapped into [-1, i - 1]: any topologically ordered tree is reachable.
        parents = [raw % (i + 1) - 1 for i, raw in enumerate(spec["parents"][:size])]
        return list(spec["tokens"][:size]), parents

    def propose(self, max_tokens: int) -> Draft:
        spec = self.specs[self.proposed % len(self.specs)]
        self.proposed += 1
        kind, depth = spec["kind"], spec["depth"]
        self.kinds.append(kind)
        tokens: list[int]
        parents: list[int] | None = None
        if kind == "empty":
            return Draft.empty("adversary")
        if kind == "random_chain":
            tokens = list(spec["tokens"])
        elif kind == "random_tree":
            tokens, parents = self._random_tree(spec, len(spec["tokens"]))
        elif kind == "always_wrong":
            tokens = [(t + spec["offsets"][i]) % TINY_VOCAB for i, t in enumerate(self._truth(depth))]
        elif kind == "truth_chain":
            tokens = self._truth(depth)
        elif kind == "eos_inside":
            tokens = self._truth(depth)
            tokens[spec["position"] % depth] = self.eos
        elif kind == "duplicate_siblings":
            # Several root children carry the true token, each with its own random subtree;
            # only the first is ever reached.
            tokens, parents = [], []
            noise = spec["tokens"][:4]
            for _ in range(spec["copies"]):
                root = len(tokens)
                tokens.append(self._truth(1)[0])
                parents.append(-1)
                for j, token in enumerate(noise):
                    parents.append(root + spec["parents"][j] % (len(tokens) - root))
                    tokens.append(token)
        else:  # truth_tree: the true path among random branches, some inserted before it
            tokens, parents = self._random_tree(spec, spec["split"])
            previous = -1
            for token in self._truth(depth):
                parents.append(previous)
                tokens.append(token)
                previous = len(tokens) - 1
            for j, token in enumerate(spec["tokens"][spec["split"] :]):
                parents.append(spec["parents"][j] % (len(tokens) + 1) - 1)
                tokens.append(token)
        probabilities = spec["probabilities"]
        return Draft(
            np.asarray(tokens, dtype=np.int64),
            None if parents is None else np.asarray(parents, dtype=np.int32),
            "adversary",
            None if probabilities is None else np.asarray(probabilities[: len(tokens)], dtype=np.float64),
        )


def _greedy(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, eos: list[int]) -> torch.Tensor:
    return model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos or None, pad_token_id=TINY_PAD)


@st.composite
def prompts(draw: st.DrawFn) -> torch.Tensor:
    """A random prompt, or a repeated pattern (long runs of true drafts)."""
    if draw(st.booleans(), label="repetitive"):
        pattern = draw(st.lists(st.integers(2, TINY_VOCAB - 1), min_size=1, max_size=6))
        tokens = pattern * draw(st.integers(1, 5))
    else:
        tokens = draw(st.lists(st.integers(2, TINY_VOCAB - 1), min_size=1, max_size=14))
    return torch.tensor([tokens])


@pytest.mark.parametrize("policy", ["cost", "all"], ids=["policy-cost", "policy-all"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@settings(
    max_examples=min(settings.default.max_examples, MAX_EXAMPLES),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    specs=st.lists(draft_specs(), min_size=1, max_size=8),
    prompt=prompts(),
    new_tokens=st.integers(1, 24),
    eos_index=st.none() | st.integers(0, 15),
)
def test_greedy_output_equals_model_generate_for_any_drafts(
    tiny_models, assert_greedy_equal, family, policy, specs, prompt, new_tokens, eos_index
) -> None:
    model = tiny_models[(family, "sdpa")]
    reference = _greedy(model, prompt, new_tokens, [])
    eos: list[int] = []
    if eos_index is not None:
        # A token the model really emits becomes EOS, so generation ends inside some draft.
        produced = reference[0, prompt.shape[1] :].tolist()
        eos = [produced[eos_index % len(produced)]]
        reference = _greedy(model, prompt, new_tokens, eos)
    drafter = AdversarialDrafter(specs, reference[0].tolist(), eos[0] if eos else TINY_EOS)
    result = generate(model, prompt, max_new_tokens=new_tokens, drafter=drafter, eos_token_id=eos, policy=policy)
    assert_greedy_equal(model, result.sequences, reference, f"{family}/{policy}/{drafter.kinds}")
    stats = result.stats
    assert stats.new_tokens == result.sequences.shape[1] - prompt.shape[1] <= new_tokens
    # One token per step is the target's own, except when a step ends on a draft token (EOS or length).
    assert stats.accepted_tokens + stats.steps in (stats.new_tokens, stats.new_tokens + 1)
