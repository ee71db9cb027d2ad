"""sam-decoding on llama.cpp (llama-cpp-python) with the default model's GGUF file.

What "equal to plain decoding" means here: llama.cpp's quantized CPU kernels give slightly different
logits for a batch of several tokens than for one token, so speculative verification (a batch per
step) can pick a different token than one-token decoding where two candidates are nearly tied. The
tests therefore check (1) the loop itself exactly: with no draft every step is one token and the
output equals a one-token greedy reference token for token; (2) with drafts, every emitted token is
the argmax of a batch llama.cpp really evaluated over the accepted context, replayed from scratch;
(3) differences from plain decoding happen only at near-ties, and their count is printed.

Sampling: the target distribution is compared with llama.cpp's own sampler chain on real logits,
and the distribution of the first tokens sampled by the speculative loop (drafts really accepted and
rejected) with the exact one computed from llama.cpp's logits (chi-square).
"""

from __future__ import annotations

import ctypes
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python)")

from chi_square import chi_square_pvalue  # noqa: E402

from sam_decoding import SamDrafter, StaticAutomaton  # noqa: E402
from sam_decoding.automaton import TokenizerMismatchError  # noqa: E402
from sam_decoding.benchmark.suites import SPEC_BENCH_DATA  # noqa: E402
from sam_decoding.drafters.base import Draft, Drafter  # noqa: E402
from sam_decoding.llama_cpp.sampling import SamplingSettings  # noqa: E402
from sam_decoding.models import gguf_path  # noqa: E402
from sam_decoding.policy.cost_aware import CostAwarePolicy  # noqa: E402
from sam_decoding.policy.cost_profile import CostProfile  # noqa: E402
from sam_decoding.stats import GenerationStats  # noqa: E402

import sam_decoding.llama_cpp as sdl  # noqa: E402

PROMPTS = [
    "Write a Python function that returns the sum of a list of numbers.",
    "List the days of the week, one per line.",
    "Explain what a hash table is in two sentences.",
]


class NoDraft(Drafter):
    def begin(self, prompt_ids: np.ndarray) -> None:
        pass

    def propose(self, max_tokens: int) -> Draft:
        return Draft.empty("none")

    def accept(self, tokens: np.ndarray, verified: object) -> None:
        pass


@pytest.fixture(scope="module")
def llm():
    try:
        path = gguf_path()
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"the default model's GGUF file is not installed: {error}")
    return llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=1, n_threads_batch=1, verbose=False)


def chat_tokens(llm, messages: list[dict[str, str]]) -> list[int]:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"
    return llm.tokenize(text.encode(), add_bos=False, special=True)


def one_token_greedy(llm, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """Reference: plain decoding's own passes (the prompt in batches keeping the last token's logits,
    then one token at a time), argmax; also each step's top-2 margin."""
    target = sdl.generation._session(llm, "all")[0]
    target.clear()
    target.prefill(prompt)
    out, margins, past = [], [], len(prompt)
    while True:
        logits = target.rows(1)[0]  # the one row the last pass kept
        top2 = np.sort(logits)[-2:]
        token = int(np.argmax(logits))
        out.append(token)
        margins.append(float(top2[1] - top2[0]))
        if target.is_end(token) or len(out) == n:
            break
        target.decode([token], past, 0)
        past += 1
    target.clear()
    return out, margins


def differs_only_at_a_near_tie(llm, prompt: list[int], ours: list[int]) -> bool:
    """Whether ``ours`` equals one-token greedy decoding, or first departs from it where its top-2 logits are within 0.5.

    Returns whether it differed (after asserting the difference is at a near-tie)."""
    reference, margins = one_token_greedy(llm, prompt, len(ours))
    first = next((i for i, (a, b) in enumerate(zip(reference, ours)) if a != b), None)
    if first is None:
        assert ours == reference
        return False
    assert margins[first] < 0.5, f"output differs at token {first} where plain decoding's top-2 margin is {margins[first]:.3f}"
    return True


def test_without_drafts_the_loop_is_one_token_decoding(llm) -> None:
    prompt = chat_tokens(llm, [{"role": "user", "content": PROMPTS[0]}])
    reference, _ = one_token_greedy(llm, prompt, 40)
    result = sdl.generate(llm, prompt, drafter=NoDraft(), max_new_tokens=40, policy="all")
    assert result.new_tokens == reference
    assert result.stats.steps == len(reference) and result.stats.drafted_tokens == 0


def test_without_drafts_the_output_is_plain_llama_generate(llm) -> None:
    # The loop evaluates what llama-cpp-python's own greedy loop evaluates (the prompt in its batches,
    # then one token at a time), so without drafts the tokens are plain decoding's, bit for bit. On
    # these Spec-Bench questions a loop whose first pass fed the prompt's last token alone departed
    # from plain decoding at tokens 13 and 2 (a near-tie decided by another batch shape).
    questions = {int(record["question_id"]): record["turns"][0] for record in map(json.loads, SPEC_BENCH_DATA.read_text().splitlines())}
    for question_id in (81, 321):
        prompt = chat_tokens(llm, [{"role": "user", "content": questions[question_id]}])
        plain = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            plain.append(int(token))
            if llm.token_eos() == token or len(plain) == 64:
                break
        llm.reset()
        result = sdl.generate(llm, prompt, drafter=NoDraft(), max_new_tokens=64, policy="all")
        assert result.new_tokens == plain, question_id


class CountingDrafter(SamDrafter):
    """The text-so-far drafter, counting how often the loop asks it for drafts."""

    asked = 0

    def propose_candidates(self, max_tokens: int) -> list[Draft]:
        self.asked += 1
        return super().propose_candidates(max_tokens)


def test_where_drafts_never_pay_the_loop_asks_for_them_less_and_less(llm) -> None:
    # A cost curve on which no draft token can pay (a token costs ten passes): the policy verifies
    # nothing, so after a few idle steps the loop asks the drafter only every few steps; the output
    # is one-token decoding's.
    prompt = chat_tokens(llm, [{"role": "user", "content": PROMPTS[1]}])
    reference, _ = one_token_greedy(llm, prompt, 64)
    steep = CostProfile.synthetic(lambda q, cache_length: 0.01 * (10 * q - 9))
    drafter = CountingDrafter(use_tree=False)
    result = sdl.generate(llm, prompt, drafter=drafter, max_new_tokens=64, policy=CostAwarePolicy(profile=steep))
    assert result.new_tokens == reference and result.stats.drafted_tokens == 0
    assert result.stats.steps == len(reference)
    assert drafter.asked <= len(reference) // 2, (drafter.asked, len(reference))  # every step: 63


def test_greedy_rows_are_llama_cpps_rows_in_batch_order(llm) -> None:
    """The loop reads a step's logits as one view of llama.cpp's buffer: each row must be the row
    llama.cpp returns for that batch position, also after a pass with fewer rows and one with more."""
    target = sdl.generation._session(llm, "all")[0]
    prompt = chat_tokens(llm, [{"role": "user", "content": PROMPTS[2]}])
    target.clear()
    for start, stop, keep_from in ((0, 12, 0), (12, 15, 0), (15, len(prompt), 3)):
        fed = prompt[start:stop]
        target.decode(fed, start, keep_from)
        count = len(fed) - keep_from
        expected = np.stack([np.array(target.logits(keep_from + row)) for row in range(count)])
        assert np.array_equal(target.rows(count), expected)
        assert target.argmax_rows(0, count) == [int(np.argmax(row)) for row in expected]
    target.clear()


def test_drafted_output_is_what_llama_cpp_verified(llm) -> None:
    """Replay over the accepted context in batches of up to 16 tokens: every emitted token is llama.cpp's argmax,
    or (where the replay's batch differs from the loop's) within a near-tie of it."""
    prompt = chat_tokens(llm, [{"role": "user", "content": PROMPTS[1]}])
    result = sdl.generate(llm, prompt, drafter=SamDrafter(use_tree=False), max_new_tokens=64, policy="all")
    assert result.stats.accepted_tokens > 0, "the drafts never paid off: the replay would test nothing"
    target = sdl.generation._session(llm, "all")[0]
    target.clear()
    target.prefill(prompt[:-1])
    past, last, emitted = len(prompt) - 1, prompt[-1], result.new_tokens
    position = 0
    steps = 0
    while position < len(emitted):
        # The greedy output decides the step boundaries: a step ends at the first token the draft missed,
        # which the replay cannot know; so each replayed batch is the rest of the output (up to 16 tokens),
        # and only its first token is checked, then one token is accepted. This checks the KV rollback:
        # rejected entries left in memory would change later argmaxes.
        batch = [last, *emitted[position : position + 15]]
        target.decode(batch, past, 0)
        choices = target.argmax_rows(0, len(batch))
        agree = 0
        while agree < len(batch) and position + agree < len(emitted) and choices[agree] == emitted[position + agree]:
            agree += 1
        if agree == 0:
            # Another batch composition than the loop's: only a near-tie may flip (measured: margin 0.22).
            row = target.logits(0)
            gap = float(row.max() - row[emitted[position]])
            assert gap < 0.5, f"step {steps}: llama.cpp picks {choices[0]}, the loop emitted {emitted[position]} ({gap:.3f} below it)"
            agree = 1
        target.remove_from(past + agree)
        past += agree
        last = emitted[position + agree - 1]
        position += agree
        steps += 1
    target.clear()


def test_differences_from_one_token_decoding_are_near_ties(llm, capsys) -> None:
    compared = differing = 0
    corpus_drafter = SamDrafter(use_tree=False)
    for text in PROMPTS:
        prompt = chat_tokens(llm, [{"role": "user", "content": text}])
        ours = sdl.generate(llm, prompt, drafter=corpus_drafter, max_new_tokens=64).new_tokens
        compared += 1
        differing += differs_only_at_a_near_tie(llm, prompt, ours)
    with capsys.disabled():
        print(f"\nllama.cpp: {differing} of {compared} greedy outputs differ from one-token decoding (near-ties only)")


def test_multi_turn_chat_streams_and_stops_at_the_end_token(llm) -> None:
    drafter = SamDrafter(use_tree=False)
    messages = [{"role": "user", "content": "Name three colors."}]
    streamed: list[list[int]] = []
    first = sdl.generate(llm, chat_tokens(llm, messages), drafter=drafter, max_new_tokens=200, on_tokens=streamed.append)
    assert first.stopped_at_end and llm.detokenize([first.new_tokens[-1]], special=True) == b"<|im_end|>"
    assert [t for step in streamed for t in step] == first.new_tokens
    answer = llm.detokenize(first.new_tokens[:-1]).decode()
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Now name three more."}]
    second = sdl.generate(llm, chat_tokens(llm, messages), drafter=drafter, max_new_tokens=200)
    assert second.new_tokens and second.stats.steps <= len(second.new_tokens)
    differs_only_at_a_near_tie(llm, chat_tokens(llm, messages), second.new_tokens)


def test_the_llama_fingerprint_matches_the_corpus_of_the_same_vocabulary(llm, tmp_path: Path) -> None:
    from sam_decoding.gguf_vocabulary import gguf_tokens, vocabulary_fingerprint

    fingerprint = sdl.tokenizer_fingerprint(llm)
    assert fingerprint == vocabulary_fingerprint(gguf_tokens(gguf_path()))
    ours = StaticAutomaton.build([[5, 6, 7, 8]], tokenizer_fingerprint=fingerprint)
    SamDrafter(ours, tokenizer_fingerprint=fingerprint)
    foreign = StaticAutomaton.build([[5, 6, 7, 8]], tokenizer_fingerprint="vocab32000-sha256:0123456789abcdef")
    with pytest.raises(TokenizerMismatchError):
        SamDrafter(foreign, tokenizer_fingerprint=fingerprint)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": -1}, "max_new_tokens must be an int >= 0"),
        ({"max_new_tokens": 5000}, "exceeds the context"),
        ({"policy": "fast"}, "policy must be one of"),
        ({"drafter": "sam"}, "drafter must be a sam_decoding Drafter"),
        ({"prompt_tokens": []}, "prompt_tokens is empty"),
        ({"prompt_tokens": [10**7]}, "outside the model's vocabulary"),
        ({"temperature": -0.5}, "temperature must be a finite number >= 0"),
        ({"temperature": 0.8, "top_p": 0.0}, "top_p must lie in (0, 1]"),
        ({"temperature": 0.8, "top_p": 1.2}, "top_p must lie in (0, 1]"),
        ({"temperature": 0.8, "top_k": -1}, "top_k must be an int >= 0"),
        ({"temperature": 0.8, "min_p": 1.0}, "min_p must lie in [0, 1)"),
        ({"temperature": 0.8, "seed": "x"}, "seed must be None or an int >= 0"),
    ],
)
def test_bad_settings_are_refused_in_one_line(llm, kwargs, message) -> None:
    arguments = {"prompt_tokens": [1, 2, 3], **kwargs}
    prompt = arguments.pop("prompt_tokens")
    with pytest.raises((ValueError, TypeError)) as caught:
        sdl.generate(llm, prompt, **arguments)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_sam_draft_model_in_llama_cpp_pythons_own_loop(llm) -> None:
    model = sdl.SamDraftModel(max_tokens=8)
    ids = np.array([1, 2, 3, 1, 2], dtype=np.intc)
    assert model(ids).tolist() == [3, 1, 2][: len(model(ids))]
    assert model(np.array([1, 2, 3, 1, 2, 3, 1], dtype=np.intc)).tolist()[:1] == [2]
    with pytest.raises(ValueError, match="max_tokens"):
        sdl.SamDraftModel(max_tokens=0)


# ---- sampling ----------------------------------------------------------------------------------------

TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.float32), ("p", np.float32)], align=True)


def llama_cpp_chain_distribution(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """What llama.cpp's own chain keeps, as llama-cpp-python builds it (top-k, typical 1.0, top-p, min-p, temperature):
    the surviving tokens' scaled logits, softmaxed (the last ``dist`` step only draws from that)."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for sampler in (
        llama_cpp.llama_sampler_init_top_k(settings.top_k),
        llama_cpp.llama_sampler_init_typical(1.0, 1),
        llama_cpp.llama_sampler_init_top_p(settings.top_p, 1),
        llama_cpp.llama_sampler_init_min_p(settings.min_p, 1),
        llama_cpp.llama_sampler_init_temp(settings.temperature),
    ):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    data = np.zeros(len(logits), dtype=TOKEN_DATA)
    data["id"] = np.arange(len(logits))
    data["logit"] = logits
    array = llama_cpp.llama_token_data_array(data.ctypes.data_as(llama_cpp.llama_token_data_p), len(logits), -1, False)
    try:
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
        raw = ctypes.cast(array.data, ctypes.POINTER(ctypes.c_char))
        kept = np.ctypeslib.as_array(raw, shape=(array.size * TOKEN_DATA.itemsize,)).view(TOKEN_DATA).copy()
    finally:
        llama_cpp.llama_sampler_free(chain)
    kept = kept[np.isfinite(kept["logit"])]
    weights = np.exp(kept["logit"].astype(np.float64) - kept["logit"].max())
    p = np.zeros(len(logits))
    p[kept["id"]] = weights / weights.sum()
    return p


@pytest.mark.parametrize(
    "settings",
    [
        SamplingSettings(temperature=0.8),  # llama-cpp-python's defaults
        SamplingSettings(temperature=1.5, top_k=100, top_p=0.99, min_p=0.001),
        SamplingSettings(temperature=0.6, top_k=0, top_p=1.0, min_p=0.02),
        SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
        SamplingSettings(temperature=1.2, top_k=0, top_p=0.9, min_p=0.0),
    ],
)
def test_the_target_distribution_is_llama_cpps_sampler_chain(llm, settings) -> None:
    """Exact where the filters see few tokens; over the whole vocabulary, llama.cpp's float32 softmax loses the
    tail's mass, so its top-p cut can fall a token or two earlier: only tokens at the cut may differ."""
    prompt = chat_tokens(llm, [{"role": "user", "content": "Tell me a story about a cat."}])
    target = sdl.generation._session(llm, "all")[0]
    target.clear()
    target.decode(prompt, 0, 0)
    rows = [np.array(target.logits(row)) for row in range(0, len(prompt), 2)]
    target.clear()
    for logits in rows:
        ours = settings.distribution(logits)
        theirs = llama_cpp_chain_distribution(logits, settings)
        differ = (ours > 0) != (theirs > 0)
        if settings.top_k == 0 and settings.top_p < 1:
            assert ours[differ].sum() + theirs[differ].sum() < 2e-3
            assert np.abs(ours - theirs).max() < 1e-3
        else:
            assert not differ.any()
            assert np.abs(ours - theirs).max() < 1e-5


REPETITIVE = "red green blue red green blue red green blue red green blue red green"
SAMPLED = SamplingSettings(temperature=0.8, top_k=3, top_p=0.95, min_p=0.05)


def exact_first_tokens(llm, prompt: list[int], settings: SamplingSettings, count: int) -> dict[tuple[int, ...], float]:
    """The exact distribution of the loop's first ``count`` tokens (``policy="all"``, a chain SamDrafter over the text so far).

    llama.cpp's logits for a position move by up to a few tenths with the batch that computes them (enough
    to move a top-k cut), so the reference replays, from an empty memory, exactly the decodes and KV removals
    the loop makes along each path (the drafter driven by the same calls): its logits are the loop's bit for
    bit, and an outcome's probability is the product of its tokens' target probabilities at those logits."""
    from sam_decoding.llama_cpp.engine import MAX_PASS_TOKENS
    from sam_decoding.llama_cpp.generation import _first_chain

    target = sdl.generation._session(llm, "all")[0]
    outcomes: dict[tuple[int, ...], float] = {}

    def rows_of(history: list[tuple[list[int], int]], fed: list[int]) -> list[np.ndarray]:
        target.clear()
        target.prefill(prompt[:-1])
        past = len(prompt) - 1
        for earlier, kept in history:
            target.decode(earlier, past, 0)
            target.remove_from(past + kept)
            past += kept
        target.decode(fed, past, 0)
        return [settings.distribution(target.logits(row)) for row in range(len(fed))]

    def step(emitted: tuple[int, ...], history: list[tuple[list[int], int]], weight: float) -> None:
        drafter = SamDrafter(use_tree=False)
        drafter.begin(np.asarray(prompt, dtype=np.int64))
        done = 0
        for _, kept in history:
            drafter.accept(np.asarray(emitted[done : done + kept], dtype=np.int64), None)
            done += kept
        room = min(count - len(emitted) - 1, MAX_PASS_TOKENS - 1)
        proposals = drafter.propose_candidates(room) if room > 0 else [Draft.empty("none")]
        draft = max((_first_chain(proposal) for proposal in proposals), key=len).tokens[: max(room, 0)].tolist()
        fed = [(prompt + list(emitted))[-1], *draft]
        rows = rows_of(history, fed)

        def walk(row: int, in_step: tuple[int, ...], weight: float) -> None:
            p = rows[row]
            for token in np.flatnonzero(p).tolist():
                taken = (*in_step, token)
                reached = weight * p[token]
                if len(emitted) + len(taken) == count or target.is_end(token):
                    outcomes[(*emitted, *taken)] = outcomes.get((*emitted, *taken), 0.0) + reached
                elif row < len(draft) and token == draft[row]:
                    walk(row + 1, taken, reached)
                else:
                    step((*emitted, *taken), [*history, (fed, len(taken))], reached)

        walk(0, (), weight)

    step((), [], 1.0)
    target.clear()
    assert sum(outcomes.values()) == pytest.approx(1.0)
    return outcomes


def test_speculative_sampling_matches_the_target_distribution(llm) -> None:
    """200 calls of 3 new tokens drafted from the repeating text: their distribution is the exact one."""
    prompt = llm.tokenize(REPETITIVE.encode(), add_bos=False, special=True)
    count, calls = 3, 200
    expected = exact_first_tokens(llm, prompt, SAMPLED, count)
    observed: Counter = Counter()
    drafted = accepted = 0
    for seed in range(calls):
        stats = GenerationStats()
        steps = sdl.stream(
            llm, prompt, drafter=SamDrafter(use_tree=False), max_new_tokens=count, policy="all",
            temperature=SAMPLED.temperature, top_k=SAMPLED.top_k, top_p=SAMPLED.top_p, min_p=SAMPLED.min_p,
            seed=seed, stats=stats,
        )
        observed[tuple(token for step in steps for token in step)] += 1
        drafted += stats.drafted_tokens
        accepted += stats.accepted_tokens
    assert 0 < accepted < drafted, f"verification must both accept and reject drafts ({accepted} of {drafted} accepted)"
    assert chi_square_pvalue(observed, expected) > 1e-3


def test_temperature_zero_is_the_greedy_path(llm) -> None:
    prompt = chat_tokens(llm, [{"role": "user", "content": PROMPTS[1]}])
    default = sdl.generate(llm, prompt, drafter=SamDrafter(use_tree=False), max_new_tokens=24, policy="all")
    explicit = sdl.generate(
        llm, prompt, drafter=SamDrafter(use_tree=False), max_new_tokens=24, policy="all",
        temperature=0.0, top_k=1000, top_p=0.1, min_p=0.5, seed=3,
    )
    assert explicit.new_tokens == default.new_tokens


def test_a_seed_repeats_a_sampled_call(llm) -> None:
    prompt = llm.tokenize(REPETITIVE.encode(), add_bos=False, special=True)

    def sample(seed: int) -> list[int]:
        return sdl.generate(llm, prompt, drafter=SamDrafter(use_tree=False), max_new_tokens=12, policy="all",
                            temperature=1.0, seed=seed).new_tokens

    first = sample(1)
    assert sample(1) == first
    assert any(sample(seed) != first for seed in (2, 3, 4)), "different seeds never changed the sample"


def test_the_server_passes_sampling_settings_through() -> None:
    from sam_decoding.llama_cpp.server import RequestError, Service

    try:
        path = gguf_path()
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"the default model's GGUF file is not installed: {error}")
    service = Service(path, None, threads=1, context=512)
    greedy, _, _ = service.complete("red green blue red green blue red", {"max_tokens": 6, "temperature": None})
    assert service.complete("red green blue red green blue red", {"max_tokens": 6})[0] == greedy
    sampled = {service.complete("Once upon a time", {"max_tokens": 6, "temperature": 1, "top_k": 0, "top_p": 1,
                                                     "min_p": 0, "seed": seed})[0] for seed in range(4)}
    assert len(sampled) > 1, "four sampled answers at temperature 1 over the whole vocabulary were all the same"
    for body, message in [({"temperature": -1}, "temperature must be"), ({"temperature": 0.7, "top_p": 2}, "top_p must lie"),
                          ({"top_k": -5}, "top_k must be"), ({"seed": 1.5}, "seed must be")]:
        with pytest.raises(RequestError) as caught:
            service.complete("Hi", {"max_tokens": 4, **body})
        assert message in str(caught.value) and "\n" not in str(caught.value)
