"""sam-decoding on llama.cpp against llama.cpp's own decoding, on Spec-Bench-mini and HumanEval.

Methods, all greedy, same GGUF file, same thread count, prompts rendered with the model's chat template:
  plain          Llama.generate, one token per evaluation
  prompt-lookup  Llama(draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10)), llama-cpp-python's own loop
  sam-draft-model  Llama(draft_model=sam_decoding.llama_cpp.SamDraftModel(max_tokens=10)), the same loop
  sam-text       sam_decoding.llama_cpp.generate, drafting from the text so far
  sam-corpus     ... plus the suite's corpus (HumanEval: the Python standard library source;
                 Spec-Bench: the model's distilled answers to other Spec-Bench questions)
  sam-cache      ... plus a response cache of the answers this run served so far

Usage:
  python bench/llama_cpp_bench.py --per-category 1 --humaneval 4 --max-new-tokens 128 --threads 2 \
      --out bench/results/llama_cpp
Writes results.json and results.md under --out; records /proc/loadavg before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


def find_corpus(prefix: str) -> Path | None:
    from sam_decoding.models import cache_dir

    found = sorted((cache_dir() / "bench").glob(f"{prefix}-*.sam"))
    return found[0] if found else None


def plain_generate(llm: Any, prompt: list[int], max_new_tokens: int, end: set[int]) -> list[int]:
    out: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        out.append(int(token))
        if token in end or len(out) >= max_new_tokens:
            break
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-category", type=int, default=1, help="Spec-Bench-mini questions per category")
    parser.add_argument("--spec-bench", type=int, default=None, help="at most this many Spec-Bench-mini questions (round-robin over categories)")
    parser.add_argument("--humaneval", type=int, default=4, help="HumanEval problems (the first N)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/llama_cpp"))
    args = parser.parse_args()

    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    import sam_decoding.llama_cpp as sdl
    from sam_decoding import ResponseCache, SamDrafter, StaticAutomaton
    from sam_decoding.benchmark.suites import load_humaneval, load_spec_bench_mini
    from sam_decoding.llama_cpp.engine import cost_ratios
    from sam_decoding.models import gguf_path, load_tokenizer
    from sam_decoding.prompts import chat_prompt_ids

    model_file = str(gguf_path())
    common = dict(model_path=model_file, n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    llm = llama_cpp.Llama(**common)
    # With a draft model llama-cpp-python keeps logits of every token but sizes its score buffer by
    # the logits_all argument: without logits_all=True it holds n_batch rows, and a prompt plus
    # output longer than that overflows it (ValueError in Llama.eval). Same computation either way.
    pld = llama_cpp.Llama(**common, logits_all=True, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))
    sam_draft_model = sdl.SamDraftModel(max_tokens=10)
    via_draft_model = llama_cpp.Llama(**common, logits_all=True, draft_model=sam_draft_model)
    tokenizer = load_tokenizer(None)
    fingerprint = sdl.tokenizer_fingerprint(llm)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    end = {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}

    suites = []
    spec = load_spec_bench_mini().limited(args.per_category).interleaved()
    if args.spec_bench is not None:
        from sam_decoding.benchmark.suites import Suite

        spec = Suite(spec.name, spec.questions[: args.spec_bench])
    suites.append((spec, find_corpus("spec-bench-distilled")))
    if args.humaneval:
        suites.append((load_humaneval().limited(args.humaneval), find_corpus("stdlib")))

    load_before = load_average()
    calibration_start = time.perf_counter()
    sdl.generate(llm, [1, 2, 3], max_new_tokens=1)  # calibrates (or loads) the cost profile
    calibration = time.perf_counter() - calibration_start
    from sam_decoding.llama_cpp.generation import _SESSIONS

    profile = _SESSIONS[id(llm)].profile
    rows = []

    def write_report(complete: bool) -> list[str]:
        """results.json and results.md from the questions so far (rewritten after each one, so a cut run keeps them)."""
        load_after = load_average()

        methods = ["plain", "prompt-lookup", "sam-draft-model", "sam-text", "sam-corpus", "sam-cache"]

        def summary(selected: list[dict]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            plain_rate = sum(r["plain"]["tokens"] for r in selected) / sum(r["plain"]["seconds"] for r in selected)
            for method in methods:
                tokens = sum(r[method]["tokens"] for r in selected)
                seconds = sum(r[method]["seconds"] for r in selected)
                entry = {"tokens_per_second": tokens / seconds, "speedup": tokens / seconds / plain_rate}
                if method in ("sam-text", "sam-corpus", "sam-cache"):
                    entry["tokens_per_evaluation"] = tokens / sum(r[method]["steps"] for r in selected)
                    entry["overhead_share"] = sum(r[method]["overhead_seconds"] for r in selected) / seconds
                if method != "plain":
                    entry["outputs_differing_from_plain"] = sum(r[method]["differs"] for r in selected)
                out[method] = entry
            out["questions"] = len(selected)
            return out

        groups: dict[str, list[dict]] = {}
        for row in rows:
            groups.setdefault(f"{row['suite']}/{row['category']}", []).append(row)
        report = {
            "command": " ".join(sys.argv),
            "model": Path(model_file).name,
            "threads": args.threads,
            "max_new_tokens": args.max_new_tokens,
            "llama_cpp_python": llama_cpp.__version__,
            "cpu": platform.processor() or platform.machine(),
            "load_before": load_before,
            "load_after": load_after,
            "complete": complete,
            "calibration_seconds": calibration,
            "cost_ratio_t_q_over_t_1": cost_ratios(profile),
            "overall": summary(rows),
            "by_suite": {name: summary([r for r in rows if r["suite"] == name]) for name in dict.fromkeys(r["suite"] for r in rows)},
            "by_category": {name: summary(group) for name, group in groups.items()},
            "questions": rows,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        lines = [
            f"# sam-decoding on llama.cpp: {report['model']}, {args.threads} threads, greedy, {args.max_new_tokens} new tokens",
            "",
            f"Command: `{report['command']}`" + ("  " if complete else f" (cut short: {len(rows)} questions)  "),
            f"Load (1/5/15 min) before: {load_before}; after: {load_after}. llama-cpp-python {llama_cpp.__version__}.",
            "",
            "Speed-up = tokens/s over plain `Llama.generate` on the same questions, run side by side; "
            "tok/eval = generated tokens per model evaluation; differ = outputs not equal to plain token for token.",
            "",
            "| group | n | plain tok/s | prompt-lookup | SamDraftModel | sam-text | sam-corpus | sam-cache | tok/eval (sam-corpus) | differ (pl / sdm / text / corpus / cache) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]

        def line(name: str, entry: dict) -> str:
            return (
                f"| {name} | {entry['questions']} | {entry['plain']['tokens_per_second']:.0f} | "
                + " | ".join(f"{entry[m]['speedup']:.2f}x" for m in methods[1:])
                + f" | {entry['sam-corpus']['tokens_per_evaluation']:.2f} | "
                + " / ".join(str(entry[m]["outputs_differing_from_plain"]) for m in methods[1:])
                + " |"
            )

        lines.append(line("**overall**", report["overall"]))
        for name, entry in report["by_suite"].items():
            lines.append(line(f"**{name}**", entry))
        for name, entry in report["by_category"].items():
            lines.append(line(name, entry))
        overhead = report["overall"]["sam-corpus"]["overhead_share"]
        lines += [
            "",
            f"Drafting + policy share of sam-corpus generation time: {overhead:.1%}.",
            "",
            "Cost of one evaluation of q tokens relative to one token, t(q)/t(1), from the calibrated profile: "
            + ", ".join(f"q={q}: {ratio:.2f}" for q, ratio in report["cost_ratio_t_q_over_t_1"].items()),
            "",
        ]
        (args.out / "results.md").write_text("\n".join(lines), encoding="utf-8")
        return lines

    for suite, corpus_path in suites:
        corpus = StaticAutomaton.load(corpus_path) if corpus_path is not None else None
        responses = ResponseCache(tokenizer_fingerprint=fingerprint)
        for question in suite.questions:
            prompt = chat_prompt_ids(tokenizer, question.prompt)[0].tolist()
            if len(prompt) + args.max_new_tokens > 4096:
                continue
            record: dict[str, Any] = {"suite": suite.name, "id": question.question_id, "category": question.category,
                                      "prompt_tokens": len(prompt), "load": load_average()}
            tick = time.perf_counter()
            plain = plain_generate(llm, prompt, args.max_new_tokens, end)
            record["plain"] = {"seconds": time.perf_counter() - tick, "tokens": len(plain), "steps": len(plain)}
            tick = time.perf_counter()
            out = plain_generate(pld, prompt, args.max_new_tokens, end)
            pld.n_tokens = 0
            record["prompt-lookup"] = {"seconds": time.perf_counter() - tick, "tokens": len(out),
                                       "differs": out != plain}
            tick = time.perf_counter()
            out = plain_generate(via_draft_model, prompt, args.max_new_tokens, end)
            via_draft_model.n_tokens = 0
            record["sam-draft-model"] = {"seconds": time.perf_counter() - tick, "tokens": len(out),
                                         "differs": out != plain}
            methods = {
                "sam-text": SamDrafter(use_tree=False, tokenizer_fingerprint=fingerprint),
                "sam-corpus": SamDrafter(corpus, use_tree=False, tokenizer_fingerprint=fingerprint),
                "sam-cache": SamDrafter(corpus, use_tree=False, response_cache=responses, tokenizer_fingerprint=fingerprint),
            }
            for name, drafter in methods.items():
                tick = time.perf_counter()
                result = sdl.generate(llm, prompt, drafter=drafter, max_new_tokens=args.max_new_tokens)
                seconds = time.perf_counter() - tick
                stats = result.stats
                record[name] = {
                    "seconds": seconds, "tokens": len(result.new_tokens), "steps": stats.steps,
                    "differs": result.new_tokens != plain,
                    "drafted": stats.drafted_tokens, "accepted": stats.accepted_tokens,
                    "expected_accepted": stats.expected_accepted_tokens,
                    "overhead_seconds": stats.draft_seconds + stats.policy_seconds,
                }
            rows.append(record)
            write_report(False)
            print(json.dumps({k: (v if not isinstance(v, dict) else round(record['plain']['seconds'] / v['seconds'] * v['tokens'] / max(record['plain']['tokens'], 1), 2)) for k, v in record.items()}), file=sys.stderr, flush=True)
    lines = write_report(True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
