"""Side by side: the policy learning in hindsight, and learning from verified nodes only.

Both variants run SAM (optionally with Token Recycling) on the same questions, interleaved, each
with a policy of its own. Reported per variant: the modelled speed-up (verification passes priced
by a reference cost profile, plus measured drafting and policy time, as in the bench), MAT, the
wall time, the policy's share of generation time, and, by draft source and depth, the acceptance
the policy predicted for every node it was offered against what the text then did (a node counts
as accepted when the emitted text follows its whole path): the calibration that decides how deep
the policy verifies.

Run: python bench/experiments/policy_ab.py --limit 2 --threads 2 \
         --reference-profile bench/profiles/cpu-2core-smollm2-measured.json [--fallback tr]
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch

from sam_decoding.benchmark.methods import modelled_seconds
from sam_decoding.benchmark.static_corpus import FULL_DISTILLATION, distilled_corpus
from sam_decoding.benchmark.suites import load_suite
from sam_decoding.drafters import Draft, SamDrafter, TokenRecyclingDrafter
from sam_decoding.generation import generate
from sam_decoding.models import DEFAULT_MODEL, cache_dir, load_model, load_tokenizer
from sam_decoding.policy import CostAwarePolicy, CostProfile
from sam_decoding.prompts import chat_prompt_ids, eos_token_ids
from sam_decoding.shards import load_corpus

VARIANTS = {"hindsight": {"learn_in_hindsight": True}, "verified-only": {"learn_in_hindsight": False}}
DEPTHS = (1, 2, 3, 4, 6, 8)


class RecordingPolicy(CostAwarePolicy):
    """The policy, also noting every candidate it was offered and what it predicted for each node."""

    offered: list[tuple[int, Draft, np.ndarray]]
    emitted: list[int]

    def prepare(self, model):  # type: ignore[override]
        self.offered, self.emitted = [], []
        return super().prepare(model)

    def choose(self, candidates, context_length, draft_seconds):  # type: ignore[override]
        for draft in candidates:
            if len(draft):
                self.offered.append((len(self.emitted), draft, self.acceptance.estimate(draft).path_probabilities * self.call_correction))
        return super().choose(candidates, context_length, draft_seconds)

    def advance(self, emitted):  # type: ignore[override]
        self.emitted.extend(emitted)
        super().advance(emitted)


def path_outcomes(draft: Draft, text: list[int], start: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth of each node and whether ``text`` from ``start`` follows its whole path (-1 depth: beyond the text)."""
    parents = range(-1, len(draft) - 1) if draft.parents is None else draft.parents.tolist()
    depth = np.zeros(len(draft), dtype=np.int64)
    followed = np.zeros(len(draft), dtype=bool)
    for node, (parent, token) in enumerate(zip(parents, draft.tokens.tolist())):
        depth[node] = 1 if parent < 0 else depth[parent] + 1
        index = start + depth[node] - 1
        followed[node] = index < len(text) and (parent < 0 or followed[parent]) and text[index] == token
        if index >= len(text):
            depth[node] = -1
    return depth, followed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=2, help="spec-bench-mini questions per category")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fallback", choices=["none", "tr"], default="none")
    parser.add_argument("--reference-profile", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(), load_tokenizer()
    reference = CostProfile.load(args.reference_profile)
    choice = distilled_corpus(model, tokenizer, DEFAULT_MODEL, cache_dir() / "bench", FULL_DISTILLATION, progress=False)
    corpus = load_corpus(choice.path)
    eos = eos_token_ids(model, tokenizer)
    policies = {name: RecordingPolicy(**options) for name, options in VARIANTS.items()}
    recyclers = {name: TokenRecyclingDrafter() for name in VARIANTS}
    # variant -> [new tokens, passes, modelled seconds, vanilla modelled seconds, wall seconds, policy seconds]
    totals = collections.defaultdict(lambda: [0.0] * 6)
    # (variant, source, depth) -> [nodes, predicted, followed]
    calibration = collections.defaultdict(lambda: [0, 0.0, 0])
    for number, question in enumerate(load_suite("spec-bench-mini").limited(args.limit).questions):
        ids = chat_prompt_ids(tokenizer, question.prompt)
        names = list(VARIANTS)[number % 2 :] + list(VARIANTS)[: number % 2]
        for name in names:
            policy = policies[name]
            drafter = SamDrafter(corpus, fallback=recyclers[name] if args.fallback == "tr" else None)
            tick = time.perf_counter()
            result = generate(model, ids, max_new_tokens=args.max_new_tokens, drafter=drafter, policy=policy, eos_token_id=eos)
            wall = time.perf_counter() - tick
            stats = result.stats
            cache_length = stats.prompt_tokens + stats.new_tokens // 2
            row = totals[name]
            row[0] += stats.new_tokens
            row[1] += stats.steps
            row[2] += modelled_seconds(reference, stats.prompt_tokens, stats.new_tokens, stats.verified_sizes)
            row[2] += stats.draft_seconds + stats.policy_seconds
            row[3] += stats.new_tokens * reference.seconds(1, cache_length)
            row[4] += wall
            row[5] += stats.policy_seconds
            for start, draft, predicted in policy.offered:
                depth, followed = path_outcomes(draft, policy.emitted, start)
                for bucket in DEPTHS:
                    nodes = depth == bucket
                    cell = calibration[(name, draft.source.split(":")[0], bucket)]
                    cell[0] += int(nodes.sum())
                    cell[1] += float(predicted[nodes].sum())
                    cell[2] += int(followed[nodes].sum())

    print(f"spec-bench-mini --limit {args.limit}, SAM{' + Token Recycling' if args.fallback == 'tr' else ''}; passes priced by `{reference.key}`\n")
    print("| variant | modelled speed-up | MAT | wall seconds | policy share |\n|---|---:|---:|---:|---:|")
    for name, (tokens, passes, modelled, vanilla, wall, policy_seconds) in totals.items():
        print(f"| {name} | {vanilla / modelled:.3f}x | {tokens / passes:.2f} | {wall:.1f} | {100 * policy_seconds / wall:.2f}% |")
    print("\nPredicted vs realized path acceptance of every offered node, by source and depth:\n")
    print("| variant | source | depth | nodes | predicted | realized |\n|---|---|---:|---:|---:|---:|")
    for (name, source, depth), (nodes, predicted, followed) in sorted(calibration.items()):
        if nodes:
            print(f"| {name} | {source} | {depth} | {nodes} | {predicted / nodes:.3f} | {followed / nodes:.3f} |")


if __name__ == "__main__":
    main()
