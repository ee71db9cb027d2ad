"""How fast could any verification policy make these drafters? The ceiling of one that knows the future.

The oracle is told, each step, which draft tokens the target will accept, and verifies exactly
those: the longest path of any candidate draft that the answer follows, ``m`` tokens, in one pass
of ``m + 1``. It replays ``SamDrafter`` (and SAM + Token Recycling) along the model's greedy
answer, which is what every lossless method emits, and prices each pass with a cost profile, as
the bench's modelled speed-up does (at the answer's mean cache length, drafting time not counted).
No real policy can see the future; the distance between its modelled speed-up and this one is what
uncertainty about acceptance costs, and this one bounds what better estimates could win.

Token Recycling learns from the logits of the fed positions; the oracle feeds it those of the
accepted path only (one forward pass over the whole answer gives them), so its table sees less
than in a real run.

Run: python bench/experiments/oracle_ceiling.py --suite spec-bench-mini --limit 4 --threads 2 \
         --reference-profile bench/profiles/cpu-2core-smollm2-measured.json
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

from sam_decoding.benchmark.static_corpus import FULL_DISTILLATION, distilled_corpus, stdlib_corpus
from sam_decoding.benchmark.suites import load_suite
from sam_decoding.drafters import Draft, SamDrafter, TokenRecyclingDrafter, Verified
from sam_decoding.models import DEFAULT_MODEL, cache_dir, load_model, load_tokenizer
from sam_decoding.policy import CostProfile
from sam_decoding.prompts import chat_prompt_ids, eos_token_ids
from sam_decoding.shards import load_corpus


def matched_depth(draft: Draft, answer: list[int]) -> int:
    """Length of the longest path of ``draft`` that ``answer`` follows from its start."""
    tokens = draft.tokens.tolist()
    parents = range(-1, len(tokens) - 1) if draft.parents is None else draft.parents.tolist()
    depth: dict[int, int] = {-1: 0}
    for node, (parent, token) in enumerate(zip(parents, tokens)):
        if parent in depth and depth[parent] < len(answer) and answer[depth[parent]] == token:
            depth[node] = depth[parent] + 1
    return max(depth.values())


def replay(drafter: SamDrafter, full: torch.Tensor, logits: torch.Tensor, prompt_length: int) -> list[int]:
    """The oracle's verified sizes ``q`` (fed tokens per pass) along the answer ``full[prompt_length:]``."""
    answer = full[prompt_length:].tolist()
    drafter.begin(full[:prompt_length].numpy())
    sizes, position = [], 0
    while position < len(answer):
        remaining = answer[position:]
        candidates = drafter.propose_candidates(max(len(remaining) - 1, 1))
        accepted = min(max(matched_depth(draft, remaining) for draft in candidates), len(remaining) - 1)
        sizes.append(accepted + 1)
        fed = torch.arange(prompt_length + position - 1, prompt_length + position + accepted)
        verified = Verified(full[fed], logits[fed], tuple(range(accepted + 1)))
        drafter.accept(np.asarray(remaining[: accepted + 1], dtype=np.int64), verified)
        position += accepted + 1
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="spec-bench-mini", choices=["spec-bench-mini", "humaneval"])
    parser.add_argument("--limit", type=int, default=4, help="questions per category")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-profile", required=True, help="cost profile that prices each pass")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(), load_tokenizer()
    profile = CostProfile.load(args.reference_profile)
    cache = cache_dir() / "bench"
    if args.suite == "humaneval":
        choice = stdlib_corpus(tokenizer, cache)
    else:
        choice = distilled_corpus(model, tokenizer, DEFAULT_MODEL, cache, FULL_DISTILLATION, progress=False)
    corpus = load_corpus(choice.path)
    eos = eos_token_ids(model, tokenizer)
    recycler = TokenRecyclingDrafter()  # kept across questions, as in the bench
    methods = {"sam": lambda: SamDrafter(corpus), "sam+tr": lambda: SamDrafter(corpus, fallback=recycler)}
    # (method, category) -> [new tokens, passes, oracle seconds, vanilla seconds]
    totals: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0, 0, 0.0, 0.0])
    for question in load_suite(args.suite).limited(args.limit).questions:
        ids = chat_prompt_ids(tokenizer, question.prompt)
        with torch.inference_mode():
            full = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=args.max_new_tokens,
                eos_token_id=eos, pad_token_id=eos[0],
            )[0]
            logits = model(full.unsqueeze(0)).logits[0]
        prompt_length, new_tokens = ids.shape[1], len(full) - ids.shape[1]
        cache_length = prompt_length + new_tokens // 2
        for method, make_drafter in methods.items():
            sizes = replay(make_drafter(), full, logits, prompt_length)
            for key in ((method, question.category), (method, "overall")):
                row = totals[key]
                row[0] += new_tokens
                row[1] += len(sizes)
                row[2] += sum(profile.seconds(q, cache_length) for q in sizes)
                row[3] += new_tokens * profile.seconds(1, cache_length)
    print(f"Oracle ceiling, {args.suite} (--limit {args.limit}), passes priced by `{profile.key}`\n")
    print("| method | category | oracle MAT | oracle modelled speed-up |\n|---|---|---:|---:|")
    for (method, category), (tokens, passes, seconds, vanilla) in sorted(totals.items(), key=lambda item: (item[0][0], item[0][1] != "overall", item[0][1])):
        print(f"| {method} | {category} | {tokens / passes:.2f} | {vanilla / seconds:.2f}x |")


if __name__ == "__main__":
    main()
