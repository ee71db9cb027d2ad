"""What the generate loop itself costs: this package's loop with a drafter that never drafts, against
transformers' `model.generate`, on the same prompts, interleaved.

Every step is then a plain one-token pass, so any ratio below 1 is overhead of the loop (input
building, the walk, bookkeeping, autograd state) that every drafter pays before it can win anything.
The loop is also run as it was before 2026-11-26, under ``torch.no_grad()`` instead of inference mode,
for the side-by-side figure in the README.

Run: python bench/experiments/engine_overhead.py --threads 2 --questions 3 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from sam_decoding.benchmark.suites import load_suite
from sam_decoding.drafters import Draft, Drafter
from sam_decoding.generation import generate
from sam_decoding.generation_config import decoding_settings, resolve_generation_config
from sam_decoding.speculation import SpeculativeRun
from sam_decoding.models import load_model, load_tokenizer
from sam_decoding.prompts import chat_prompt_ids, eos_token_ids


class NeverDrafts(Drafter):
    """Proposes nothing, so every step is a plain decoding step."""

    def begin(self, prompt_ids: np.ndarray) -> None:
        pass

    def propose(self, max_tokens: int) -> Draft:
        return Draft.empty("none")

    def accept(self, tokens: np.ndarray, verified: object) -> None:
        pass


def loop_under_no_grad(model: torch.nn.Module, ids: torch.Tensor, max_new_tokens: int, eos: list[int]) -> int:
    """The same loop entered the way ``generate`` entered it before: under ``no_grad`` only."""
    config, extra = resolve_generation_config(model, None, {"max_new_tokens": max_new_tokens, "eos_token_id": eos})
    settings = decoding_settings(
        model, ids, config, extra, logits_processor=None, stopping_criteria=None, generator=None, streamer=None
    )
    with torch.no_grad():
        result = SpeculativeRun(model, ids, settings, NeverDrafts(), None).run()
    return len(result.new_tokens)


def quartiles(values: list[float]) -> str:
    low, median, high = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return f"median {median:.3f} (quartiles {low:.3f}-{high:.3f}, {len(values)} runs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--questions", type=int, default=3, help="Spec-Bench-mini writing questions")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(None).eval(), load_tokenizer(None)
    eos = eos_token_ids(model, tokenizer)
    questions = [q for q in load_suite("spec-bench-mini").questions if q.category == "writing"][: args.questions]
    ratios: dict[str, list[float]] = {"inference mode": [], "no_grad": []}
    for question in questions:
        ids = chat_prompt_ids(tokenizer, question.prompt)
        for _ in range(args.repeats):
            tick = time.perf_counter()
            with torch.inference_mode():
                output = model.generate(
                    ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=args.max_new_tokens,
                    eos_token_id=eos, pad_token_id=eos[0],
                )
            vanilla = (output.shape[1] - ids.shape[1]) / (time.perf_counter() - tick)
            tick = time.perf_counter()
            result = generate(model, ids, drafter=NeverDrafts(), max_new_tokens=args.max_new_tokens, eos_token_id=eos, policy="all")
            ratios["inference mode"].append(len(result.new_tokens) / (time.perf_counter() - tick) / vanilla)
            tick = time.perf_counter()
            count = loop_under_no_grad(model, ids, args.max_new_tokens, eos)
            ratios["no_grad"].append(count / (time.perf_counter() - tick) / vanilla)
            print(f"vanilla {vanilla:.1f} tokens/s; loop / vanilla: {ratios['inference mode'][-1]:.3f} "
                  f"(no_grad: {ratios['no_grad'][-1]:.3f})", flush=True)
    for name, values in ratios.items():
        print(f"loop ({name}) / vanilla: {quartiles(values)}")


if __name__ == "__main__":
    main()
