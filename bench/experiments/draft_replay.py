"""Draft precision without timing: replay drafters against the target's own greedy answers.

Question answered: at a given number of verified draft tokens per step, how many tokens does each
drafter get accepted per step (MAT)? No model runs during the replay: the target's greedy answers
are generated once (``prepare``) and each step's acceptance is the longest drafted path that agrees
with the answer, exactly as greedy verification would accept it. A draft is cut to its first
``budget`` nodes (drafters list nodes best first; SuffixDecoding is given the budget as its own
``max_spec_tokens``), so budgets compare drafters at equal verified tokens per step. MAT per
category follows the overall columns.

    python bench/experiments/draft_replay.py prepare --out /tmp/replay.json   # ~5-10 min on 2 cores
    python bench/experiments/draft_replay.py run --data /tmp/replay.json --budgets 1,2,4,8,16

Data: spec-bench-mini; per category the first ``--eval`` questions are replayed and the next
``--corpus`` questions' answers form the static corpus (65 answers and 26 questions by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import sam_decoding as sd
from sam_decoding.drafters.base import Draft, Drafter


def prepare(out: Path, eval_per_category: int, corpus_per_category: int, max_new_tokens: int) -> None:
    import torch

    from sam_decoding.benchmark.suites import load_spec_bench_mini
    from sam_decoding.distillation import greedy_continuations
    from sam_decoding.models import load_model, load_tokenizer, tokenizer_fingerprint
    from sam_decoding.prompts import chat_prompt_ids, eos_token_ids

    torch.set_num_threads(1)  # a shared machine: threads that wait on each other cost far more than they give
    tokenizer, model = load_tokenizer(), load_model()
    suite = load_spec_bench_mini().limited(eval_per_category + corpus_per_category)
    seen: dict[str, int] = {}
    rows = []
    for question in suite.questions:
        index = seen.get(question.category, 0)
        seen[question.category] = index + 1
        prompt = chat_prompt_ids(tokenizer, question.prompt)[0].tolist()
        rows.append({"id": question.question_id, "category": question.category, "prompt": prompt,
                     "role": "eval" if index < eval_per_category else "corpus"})
    eos = eos_token_ids(model, tokenizer)
    rows.sort(key=lambda row: len(row["prompt"]))
    started = time.perf_counter()
    for first in range(0, len(rows), 8):
        batch = rows[first:first + 8]
        answers = greedy_continuations(model, [row["prompt"] for row in batch], max_new_tokens=max_new_tokens,
                                       eos=eos, pad_token_id=tokenizer.pad_token_id or 0)
        for row, answer in zip(batch, answers):
            row["answer"] = answer
        print(f"{first + len(batch)}/{len(rows)} answered, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    out.write_text(json.dumps({"fingerprint": tokenizer_fingerprint(tokenizer), "rows": rows}))


def replay(drafter: Drafter, prompt: list[int], answer: list[int], budget: int) -> tuple[int, int, int, float]:
    """(steps, accepted draft tokens, verified draft tokens, seconds in propose) of greedy decoding
    ``answer`` after ``prompt``."""
    drafter.begin(np.asarray(prompt, dtype=np.int64))
    position = steps = accepted_total = verified_total = 0
    proposing = 0.0
    while position < len(answer):
        tick = time.perf_counter()
        draft = drafter.propose(budget)
        proposing += time.perf_counter() - tick
        tokens = draft.tokens[:budget].tolist()
        parents = list(range(-1, len(tokens) - 1)) if draft.parents is None else draft.parents[:budget].tolist()
        verified_total += len(tokens)
        # The longest path of nodes that each equal the answer's next token.
        accepted, parent = 0, -1
        while position + accepted < len(answer):
            target = answer[position + accepted]
            child = next((i for i, (t, p) in enumerate(zip(tokens, parents)) if p == parent and t == target), None)
            if child is None:
                break
            accepted, parent = accepted + 1, child
        emitted = answer[position:position + accepted + 1]
        drafter.accept(np.asarray(emitted, dtype=np.int64), None)
        position += len(emitted)
        steps += 1
        accepted_total += accepted
    drafter.finish()
    return steps, accepted_total, verified_total, proposing


def drafters(corpus: sd.StaticAutomaton, documents: list[list[int]], grid: list[tuple[float, float, int]]
             ) -> dict[str, Callable[[int], Drafter]]:
    """Factories of each drafter for a budget of verified nodes per step."""
    made: dict[str, Callable[[int], Drafter]] = {
        "sam-tree": lambda budget: sd.SamDrafter(corpus, use_tree=True, tree_nodes=budget),
        "sam-chain": lambda budget: sd.SamDrafter(corpus, use_tree=False),
    }
    for floor, trusted, orders in grid:
        for shape in ("tree", "chain"):
            made[f"sam-{shape} p>={floor} L*={trusted} orders={orders}"] = (
                lambda budget, floor=floor, trusted=trusted, orders=orders, shape=shape: sd.SamDrafter(
                    corpus, use_tree=shape == "tree", tree_nodes=budget, min_probability=floor,
                    trusted_length=trusted, max_orders=orders))
    try:
        from sam_decoding.benchmark.suffix_decoding import SuffixDecodingDrafter
    except ImportError:
        try:  # the baseline copied beside arctic_inference, outside the package (see NOTES)
            from suffix_baseline import SuffixDecodingDrafter  # type: ignore[no-redef]
        except ImportError as error:
            print(f"suffix baseline skipped: {error}", file=sys.stderr)
            return made
    try:
        made["suffix-tree"] = lambda budget: SuffixDecodingDrafter(documents, use_tree=True, max_spec_tokens=budget)
        made["suffix-chain"] = lambda budget: SuffixDecodingDrafter(documents, use_tree=False, max_spec_tokens=budget)
        made["suffix-tree"](4)
    except Exception as error:  # an optional baseline: say why it is left out
        print(f"suffix baseline skipped: {error}", file=sys.stderr)
        made.pop("suffix-tree", None)
        made.pop("suffix-chain", None)
    return made


def run(data: Path, budgets: list[int], names: list[str] | None, grid: list[tuple[float, float, int]]) -> None:
    loaded = json.loads(data.read_text())
    rows = loaded["rows"]
    documents = [row["answer"] for row in rows if row["role"] == "corpus"]
    corpus = sd.StaticAutomaton.build(documents, tokenizer_fingerprint=loaded["fingerprint"])
    evaluated = [row for row in rows if row["role"] == "eval"]
    made = drafters(corpus, documents, grid)
    print(f"corpus {corpus.num_tokens} tokens from {len(documents)} answers; {len(evaluated)} questions replayed")
    categories = list(dict.fromkeys(row["category"] for row in evaluated))
    print("| drafter | budget | MAT | verified/step | accepted/verified | propose us/step | "
          + " | ".join(categories) + " |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(categories))
    for name, make in made.items():
        if names and not any(name.startswith(prefix) for prefix in names):
            continue
        for budget in budgets:
            steps = accepted = verified = tokens = 0
            proposing = 0.0
            per_category: dict[str, list[int]] = {category: [0, 0] for category in categories}
            drafter = make(budget)  # one drafter serves every question, as in a bench run
            for row in evaluated:
                s, a, v, seconds = replay(drafter, row["prompt"], row["answer"], budget)
                steps, accepted, verified, tokens = steps + s, accepted + a, verified + v, tokens + len(row["answer"])
                proposing += seconds
                per_category[row["category"]][0] += len(row["answer"])
                per_category[row["category"]][1] += s
            cells = " | ".join(f"{done / taken:.2f}" for done, taken in per_category.values())
            print(f"| {name} | {budget} | {tokens / steps:.3f} | {verified / steps:.2f} | "
                  f"{accepted / max(verified, 1):.3f} | {proposing / steps * 1e6:.0f} | {cells} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("prepare")
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--eval", type=int, default=2)
    make.add_argument("--corpus", type=int, default=5)
    make.add_argument("--max-new-tokens", type=int, default=128)
    use = commands.add_parser("run")
    use.add_argument("--data", type=Path, required=True)
    use.add_argument("--budgets", default="1,2,4,8,16")
    use.add_argument("--drafters", default=None, help="comma-separated name prefixes (default: all)")
    use.add_argument("--grid", default="", help="extra SamDrafter settings, e.g. 0.05:0,0.1:8:1 (min_probability:trusted_length[:max_orders])")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.eval, args.corpus, args.max_new_tokens)
    else:
        grid = []
        for item in filter(None, args.grid.split(",")):
            fields = item.split(":") + ["8"]
            grid.append((float(fields[0]), float(fields[1]), int(fields[2])))
        run(args.data, [int(b) for b in args.budgets.split(",")], args.drafters.split(",") if args.drafters else None,
            grid)


if __name__ == "__main__":
    main()
