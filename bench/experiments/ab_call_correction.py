"""Wall-clock A/B of the policy's per-call acceptance correction, side by side in one process (2 torch threads).

Run: python bench/experiments/ab_call_correction.py CATEGORIES PER_CATEGORY CORPUS
e.g. ``writing,humanities,stem,reasoning,rag,qa,translation,coding 2
~/.cache/sam_decoding/bench/spec-bench-distilled-*.sam`` (the corpus ``sam-decoding bench --suite
spec-bench-mini`` distils). Prints each question's speed-up over vanilla ``model.generate`` for SAM
with the correction, SAM without it, and SAM chains of at most 8 tokens (no policy), the methods in
an order rotated per question, then pooled and per-category medians.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import sam_decoding as sd
from sam_decoding.benchmark.suites import load_suite
from sam_decoding.drafters import SamDrafter
from sam_decoding.models import load_model, load_tokenizer
from sam_decoding.policy import CostAwarePolicy
from sam_decoding.prompts import chat_prompt_ids
from sam_decoding.shards import load_corpus

VARIANTS = ("vanilla", "sam-corrected", "sam-uncorrected", "chain8")
NEW_TOKENS = 128


class UncorrectedPolicy(CostAwarePolicy):
    """The policy as it was before the per-call correction."""

    @property
    def call_correction(self) -> float:
        return 1.0


def main(categories: list[str], per_category: int, corpus_path: str) -> None:
    torch.set_num_threads(2)
    corpus = load_corpus(corpus_path)
    model, tokenizer = load_model(), load_tokenizer()
    eos = [tokenizer.eos_token_id]
    policies = {"sam-corrected": CostAwarePolicy(), "sam-uncorrected": UncorrectedPolicy()}

    def run(variant: str, ids: torch.Tensor) -> None:
        with torch.inference_mode():
            if variant == "vanilla":
                model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW_TOKENS,
                               eos_token_id=eos, pad_token_id=eos[0])
            elif variant == "chain8":
                sd.generate(model, ids, max_new_tokens=NEW_TOKENS, drafter=SamDrafter(corpus, use_tree=False, max_draft=8),
                            policy="all", eos_token_id=eos)
            else:
                sd.generate(model, ids, max_new_tokens=NEW_TOKENS, drafter=SamDrafter(corpus), policy=policies[variant],
                            eos_token_id=eos)

    questions = [q for q in load_suite("spec-bench-mini").limited(per_category).questions if q.category in categories]
    for variant in VARIANTS:  # untimed warm-up: first calls allocate and pick kernels
        run(variant, chat_prompt_ids(tokenizer, questions[0].prompt)[:, :64])
    seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    by_category: dict[tuple[str, str], list[float]] = {}
    for index, question in enumerate(questions):
        ids = chat_prompt_ids(tokenizer, question.prompt)
        times = {}
        for variant in VARIANTS[index % 4 :] + VARIANTS[: index % 4]:
            started = time.perf_counter()
            run(variant, ids)
            times[variant] = time.perf_counter() - started
        for variant in VARIANTS:
            seconds[variant].append(times[variant])
            by_category.setdefault((question.category, variant), []).append(times["vanilla"] / times[variant])
        print(index, question.category, " ".join(f"{v}:{times['vanilla'] / times[v]:.2f}" for v in VARIANTS), flush=True)
    print("pooled:", " ".join(f"{v}:{sum(seconds['vanilla']) / sum(seconds[v]):.3f}" for v in VARIANTS))
    for category in categories:
        print(category.ljust(14), " ".join(f"{v}:{statistics.median(by_category[(category, v)]):.2f}" for v in VARIANTS))


if __name__ == "__main__":
    main(sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3])
