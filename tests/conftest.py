"""Shared fixtures: tiny random llama/qwen2/gpt2 models, the real default model, and a greedy-equality checker.

Tiny models are built from configs with a fixed seed, so every run sees the same weights. Their
vocabularies are small (96 tokens) so that random prompts repeat and drafts get accepted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, settings

# Cost profiles of test models stay in memory: a test run must not write into the user's cache.
os.environ.setdefault("SAM_DECODING_COST_PROFILE_CACHE", "0")

# Hypothesis in CI: the same examples on every run (derandomized, no example database carried
# between runs), no per-example deadline (model runs vary with machine load), and a bounded number
# of examples for tests that take theirs from the profile (see tests/test_lossless_property.py).
# Selected by HYPOTHESIS_PROFILE=ci, or automatically when the CI environment variable is set.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=30,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else None)
if _PROFILE:
    settings.load_profile(_PROFILE)

TINY_VOCAB = 96
TINY_EOS = 1
TINY_PAD = 0


def _tiny_model(family: str, attn_implementation: str) -> torch.nn.Module:
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    special = {"bos_token_id": TINY_PAD, "eos_token_id": TINY_EOS, "pad_token_id": TINY_PAD}
    torch.manual_seed(1234)
    if family == "llama":
        config = LlamaConfig(
            vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, **special,
        )
        model = LlamaForCausalLM(config)
    elif family == "qwen2":
        config = Qwen2Config(
            vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, **special,
        )
        model = Qwen2ForCausalLM(config)
    elif family == "gpt2":
        config = GPT2Config(vocab_size=TINY_VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=1024, **special)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(family)
    model.set_attn_implementation(attn_implementation)
    return model.eval()


TINY_FAMILIES = ("llama", "qwen2", "gpt2")


@pytest.fixture(scope="session")
def tiny_models() -> dict[tuple[str, str], torch.nn.Module]:
    """``(family, attention implementation) -> model`` for llama/qwen2/gpt2 with eager and sdpa attention."""
    return {
        (family, impl): _tiny_model(family, impl) for family in TINY_FAMILIES for impl in ("sdpa", "eager")
    }


@pytest.fixture(params=TINY_FAMILIES)
def tiny_model(request: pytest.FixtureRequest, tiny_models) -> torch.nn.Module:
    """Each tiny family with sdpa attention."""
    return tiny_models[(request.param, "sdpa")]


@dataclass
class DefaultModel:
    model: torch.nn.Module
    tokenizer: object

    def chat_ids(self, text: str) -> torch.Tensor:
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt"
        )
        if not isinstance(ids, torch.Tensor):
            ids = ids["input_ids"]
        return ids


@pytest.fixture(scope="session")
def default_model() -> DefaultModel:
    """The real default model (SmolLM2-135M-Instruct) and its tokenizer, loaded once per session."""
    from sam_decoding.models import load_model, load_tokenizer

    return DefaultModel(load_model(None), load_tokenizer(None))


@dataclass
class Tie:
    where: str
    position: int
    gap: float


_TIES: list[Tie] = []


@pytest.fixture
def assert_greedy_equal() -> Callable[..., None]:
    """Check a speculative greedy output against vanilla greedy, tolerating only numerical ties.

    A difference is accepted only at the first differing position, and only if vanilla's top-2
    logits there differ by less than 1e-4; such ties are counted and listed in the terminal summary.
    """

    def check(model: torch.nn.Module, ours: torch.Tensor, reference: torch.Tensor, where: str = "") -> None:
        ours, reference = ours.reshape(-1), reference.reshape(-1)
        common = min(len(ours), len(reference))
        differ = (ours[:common] != reference[:common]).nonzero()
        if len(differ) == 0:
            assert len(ours) == len(reference), f"{where}: lengths differ ({len(ours)} vs {len(reference)}) with equal prefix"
            return
        position = int(differ[0])
        with torch.no_grad():
            logits = model(reference[:position].unsqueeze(0)).logits[0, -1].double()
        top = torch.topk(logits, 2).values
        gap = float(top[0] - top[1])
        assert gap < 1e-4, (
            f"{where}: speculative output differs from vanilla greedy at position {position} "
            f"(ours {int(ours[position])}, vanilla {int(reference[position])}, top-2 gap {gap:.3g})"
        )
        _TIES.append(Tie(where, position, gap))

    return check


def pytest_report_header(config: pytest.Config) -> str:
    """Which sam_decoding the tests import: a build in the checkout, or an installed wheel (CI checks this line)."""
    import sam_decoding

    return f"sam_decoding {sam_decoding.__version__} from {sam_decoding.__file__}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    terminalreporter.section("greedy ties (tolerated differences from vanilla)")
    terminalreporter.write_line(f"{len(_TIES)} tie(s)")
    for tie in _TIES:
        terminalreporter.write_line(f"  {tie.where}: position {tie.position}, top-2 gap {tie.gap:.3g}")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Many short forward passes of tiny models: one torch thread avoids contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
