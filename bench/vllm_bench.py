"""vLLM with and without speculative decoding: plain, ``ngram``, ``suffix`` and sam-decoding, in one run.

Every configuration runs in its own process (one engine each) on the same questions: Spec-Bench-mini
(round-robin over categories) and HumanEval, one request at a time, then other questions of the same
suite all at once (``--concurrency`` running together), greedy. Before measuring, the configurations that learn across
requests (``suffix``, ours) serve the same past traffic: other questions of the same suites. Our static
corpus is built from plain vLLM's answers to that traffic, so it holds exactly what ``suffix``'s global
tree saw. Reported per suite and batch size: tokens per second, tokens per target forward pass (per
request: emitted tokens over the steps it took), acceptance per draft position, and mismatches
against plain vLLM's token ids. JSON, Markdown and a PNG chart go to ``--out``.

Run with the vLLM virtual environment (see docs/vllm.md), e.g.::

    VLLM_CPU_KVCACHE_SPACE=2 python bench/vllm_bench.py --spec-bench 8 --humaneval 4 --past 16 --max-tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONFIGS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "ngram": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4},
    "suffix": {"method": "suffix", "num_speculative_tokens": 8},
    "sam": {"method": "custom_class", "model": "sam_decoding.vllm.SamProposer", "num_speculative_tokens": 8},
}
SUITES = ("spec-bench-mini", "humaneval")


def questions(spec_bench: int, humaneval: int, past: int, concurrency: int) -> dict[str, list[dict[str, str]]]:
    """Questions per suite and batch size, and the past traffic (later questions of the same suites).

    The batched runs ask other questions than the one-at-a-time runs: a method that learns across
    requests (``suffix``, a response cache) would otherwise draft the batched answers from the
    identical answers it produced a moment before.
    """
    from sam_decoding.benchmark.suites import load_humaneval, load_spec_bench_mini

    spec = load_spec_bench_mini().interleaved().questions
    code = load_humaneval().questions
    past_spec, past_code = past - past // 4, past // 4
    as_dicts = lambda items: [{"id": q.question_id, "category": q.category, "prompt": q.prompt} for q in items]  # noqa: E731
    spec_end, code_end = spec_bench + concurrency, humaneval + concurrency
    return {
        "spec-bench-mini/1": as_dicts(spec[:spec_bench]),
        f"spec-bench-mini/{concurrency}": as_dicts(spec[spec_bench:spec_end]),
        "humaneval/1": as_dicts(code[:humaneval]),
        f"humaneval/{concurrency}": as_dicts(code[humaneval:code_end]),
        "past": as_dicts(spec[spec_end : spec_end + past_spec] + code[code_end : code_end + past_code]),
    }


# ---- one configuration, in its own process ------------------------------------------------------


def _spec_counters(llm: Any) -> dict[str, Any]:
    counters: dict[str, Any] = {"drafts": 0, "draft_tokens": 0, "accepted": 0, "per_position": []}
    names = {
        "vllm:spec_decode_num_drafts": "drafts",
        "vllm:spec_decode_num_draft_tokens": "draft_tokens",
        "vllm:spec_decode_num_accepted_tokens": "accepted",
    }
    for metric in llm.get_metrics():
        if metric.name in names:
            counters[names[metric.name]] += int(metric.value)
        elif metric.name == "vllm:spec_decode_num_accepted_tokens_per_pos":
            counters["per_position"] = list(metric.values)
    return counters


def _difference(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    width = max(len(after["per_position"]), len(before["per_position"]))
    pad = lambda values: list(values) + [0] * (width - len(values))  # noqa: E731
    return {
        "drafts": after["drafts"] - before["drafts"],
        "draft_tokens": after["draft_tokens"] - before["draft_tokens"],
        "accepted": after["accepted"] - before["accepted"],
        "per_position": [a - b for a, b in zip(pad(after["per_position"]), pad(before["per_position"]))],
    }


def _generate(llm: Any, prompts: list[list[int]], params: Any) -> tuple[list[list[int]], float]:
    started = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
    return [list(output.outputs[0].token_ids) for output in outputs], time.perf_counter() - started


def _chat_ids(tokenizer, question: str) -> list[int]:
    """Token ids of ``question`` as a one-turn chat, ready for the assistant's answer."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def run_config(name: str, plan: dict[str, Any], out: Path) -> None:
    """Serve the past traffic (if the configuration learns from it), then measure; write JSON to ``out``."""
    from vllm import LLM, SamplingParams

    speculative = CONFIGS[name]
    additional = {"sam_decoding": {"corpus": plan["corpus"], "response_cache": {"max_tokens": 1_000_000}}} if name == "sam" else {}
    llm = LLM(
        model=plan["model"], dtype="float32", max_model_len=2048, seed=0, enforce_eager=True,
        max_num_seqs=plan["concurrency"], disable_log_stats=False, speculative_config=speculative,
        additional_config=additional,
    )
    tokenizer = llm.get_tokenizer()
    chat = lambda q: _chat_ids(tokenizer, q["prompt"])  # noqa: E731
    params = SamplingParams(temperature=0.0, max_tokens=plan["max_tokens"])
    result: dict[str, Any] = {"config": name, "speculative_config": speculative, "runs": []}
    if name in ("plain", "suffix", "sam"):
        past, seconds = _generate(llm, [chat(q) for q in plan["questions"]["past"]], params)
        result["past"] = {"outputs": past, "seconds": seconds}
    for suite in SUITES:
        for batch in (1, plan["concurrency"]):
            prompts = [chat(q) for q in plan["questions"][f"{suite}/{batch}"]]
            before = _spec_counters(llm)
            if batch == 1:
                outputs, seconds = [], 0.0
                for prompt in prompts:
                    tokens, spent = _generate(llm, [prompt], params)
                    outputs += tokens
                    seconds += spent
            else:
                outputs, seconds = _generate(llm, prompts, params)
            counters = _difference(_spec_counters(llm), before)
            # The machine is shared: its load beside each run says how far absolute speeds compare.
            load = round(os.getloadavg()[0], 2)
            result["runs"].append({"suite": suite, "batch": batch, "seconds": seconds, "outputs": outputs, "load": load, **counters})
            print(f"{name} {suite} batch {batch}: {sum(map(len, outputs)) / seconds:.1f} tok/s", file=sys.stderr, flush=True)
    out.write_text(json.dumps(result))


# ---- the cost of one propose call --------------------------------------------------------------


def propose_timing(out: Path, rows: int = 32, steps: int = 200, k: int = 8, fallback: str = "prompt_lookup") -> dict[str, Any]:
    """Time one ``propose`` call for ``rows`` decoding rows, ours beside vLLM's ``ngram`` proposer on the
    same arrays (no engine). Each row's "target" follows a real text (Spec-Bench questions and HumanEval
    prompts, tokenized), so drafts are accepted as often as that text repeats itself or the corpus."""
    from types import SimpleNamespace

    import numpy as np
    from transformers import AutoTokenizer
    from vllm.v1.spec_decode.ngram_proposer import NgramProposer

    import sam_decoding as sd
    from sam_decoding.benchmark.suites import load_humaneval, load_spec_bench_mini
    from sam_decoding.models import default_model_dir, tokenizer_fingerprint
    from sam_decoding.vllm import BatchProposer, SamSettings

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    prompts = [q.prompt for q in load_spec_bench_mini().interleaved().questions] + [q.prompt for q in load_humaneval().questions]
    texts = [np.asarray(tokenizer(text)["input_ids"], dtype=np.int32) for text in prompts]
    texts = [text for text in texts if 150 <= len(text) <= 1500]
    corpus = out.parent / "propose-timing-corpus.sam"
    sd.StaticAutomaton.build(texts[len(texts) // 2 :], tokenizer_fingerprint=tokenizer_fingerprint(tokenizer)).save(corpus)
    texts = texts[: len(texts) // 2]
    width = 2048
    config = SimpleNamespace(
        speculative_config=SimpleNamespace(prompt_lookup_min=2, prompt_lookup_max=4, num_speculative_tokens=k),
        model_config=SimpleNamespace(max_model_len=width), scheduler_config=SimpleNamespace(max_num_seqs=rows),
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
    )
    ngram = NgramProposer(config)
    ours = BatchProposer(SamSettings(corpus=str(corpus), fallback=fallback), k, tokenizer_fingerprint(tokenizer), width)
    token_ids = np.zeros((rows, width), dtype=np.int32)
    lengths = np.zeros(rows, dtype=np.int32)
    targets: list[np.ndarray] = [texts[0]] * rows
    sampled: list[list[int]] = [[]] * rows
    started_requests = 0

    def start(row: int) -> None:
        # A new request in this row: its first 100 tokens are the prompt, the rest is what the target says.
        nonlocal started_requests
        text = targets[row] = texts[started_requests % len(texts)]
        started_requests += 1
        token_ids[row, :101] = text[:101]
        lengths[row] = 101
        sampled[row] = [int(text[100])]

    for row in range(rows):
        start(row)
    timings: dict[str, list[float]] = {"sam": [], "ngram": []}
    for _ in range(steps):
        started = time.perf_counter()
        ngram.propose(k, sampled, lengths, token_ids)
        timings["ngram"].append(time.perf_counter() - started)
        started = time.perf_counter()
        drafts = ours.propose(sampled, lengths, token_ids)
        timings["sam"].append(time.perf_counter() - started)
        for row, draft in enumerate(drafts):
            text, length = targets[row], int(lengths[row])
            if length >= len(text):
                start(row)
                continue
            accepted = 0
            while accepted < len(draft) and length + accepted + 1 < len(text) and draft[accepted] == text[length + accepted]:
                accepted += 1
            new = text[length : length + accepted + 1]
            token_ids[row, length : length + len(new)] = new
            lengths[row] = length + len(new)
            sampled[row] = [int(token) for token in new]
        time.sleep(0.002)  # a "forward pass", so the proposer's step timing sees an interval
    result = {
        "rows": rows, "steps": steps, "num_speculative_tokens": k, "requests": started_requests,
        "mean_draft_tokens_last_step": round(sum(map(len, drafts)) / rows, 2),
        **{f"{name}_ms_median": round(float(np.median(values)) * 1e3, 3) for name, values in timings.items()},
        **{f"{name}_ms_p90": round(float(np.percentile(values, 90)) * 1e3, 3) for name, values in timings.items()},
    }
    result["sam_over_ngram_median"] = round(result["sam_ms_median"] / result["ngram_ms_median"], 2)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


# ---- the whole run ------------------------------------------------------------------------------


def build_corpus(model: str, answers: list[list[int]], path: Path) -> None:
    """Our static corpus: plain vLLM's answers to the past traffic, tokenized as the model saw them."""
    from transformers import AutoTokenizer

    import sam_decoding as sd
    from sam_decoding.models import tokenizer_fingerprint

    tokenizer = AutoTokenizer.from_pretrained(model)
    corpus = sd.StaticAutomaton.build([answer for answer in answers if answer], tokenizer_fingerprint=tokenizer_fingerprint(tokenizer))
    corpus.save(path)


def summarize(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration, suite and batch size, with ratios to plain vLLM of the same cell."""
    plain = {(run["suite"], run["batch"]): run for run in results["plain"]["runs"]}
    rows = []
    for name, result in results.items():
        for run in result["runs"]:
            reference = plain[(run["suite"], run["batch"])]
            tokens = sum(map(len, run["outputs"]))
            passes = tokens - run["accepted"]  # every step emits its accepted draft tokens plus one
            drafts = max(run["drafts"], 1)
            rows.append(
                {
                    "config": name,
                    "suite": run["suite"],
                    "batch": run["batch"],
                    "tokens": tokens,
                    "seconds": round(run["seconds"], 3),
                    "tokens_per_second": round(tokens / run["seconds"], 2),
                    "throughput_vs_plain": round(tokens / run["seconds"] / (sum(map(len, reference["outputs"])) / reference["seconds"]), 3),
                    "tokens_per_target_pass": round(tokens / max(passes, 1), 3),
                    "draft_tokens": run["draft_tokens"],
                    "accepted_tokens": run["accepted"],
                    "acceptance_per_position": [round(count / drafts, 3) for count in run["per_position"]],
                    "mismatches": sum(a != b for a, b in zip(run["outputs"], reference["outputs"])),
                    "load_average": run.get("load"),
                }
            )
    return rows


def write_markdown(path: Path, rows: list[dict[str, Any]], command: str, notes: list[str]) -> None:
    lines = [
        "# vLLM: plain, ngram, suffix and sam-decoding",
        "",
        f"Command: `{command}`",
        "",
        *notes,
        "",
        "| suite | batch | config | tok/s | vs plain | tokens / target pass | acceptance by draft position | mismatches | load |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: (r["suite"], r["batch"], list(CONFIGS).index(r["config"]))):
        positions = " ".join(f"{value:.2f}" for value in row["acceptance_per_position"]) or "-"
        lines.append(
            f"| {row['suite']} | {row['batch']} | {row['config']} | {row['tokens_per_second']:.1f} | "
            f"{row['throughput_vs_plain']:.2f}x | {row['tokens_per_target_pass']:.2f} | {positions} | {row['mismatches']} | "
            f"{row['load_average'] if row['load_average'] is not None else '-'} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_chart(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys((row["suite"], row["batch"]) for row in rows))
    configs = [name for name in CONFIGS if any(row["config"] == name for row in rows)]
    by_key = {(row["suite"], row["batch"], row["config"]): row for row in rows}
    figure, panels = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(configs)
    for panel, (field, label) in zip(panels, (("throughput_vs_plain", "tokens/s vs plain vLLM (×)"), ("tokens_per_target_pass", "tokens per target pass"))):
        for index, name in enumerate(configs):
            positions = [cell + (index - (len(configs) - 1) / 2) * width for cell in range(len(cells))]
            panel.bar(positions, [by_key.get((*cell, name), {}).get(field, 0.0) for cell in cells], width=width, label=name)
        panel.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        panel.set_xticks(range(len(cells)))
        panel.set_xticklabels([f"{suite}\nbatch {batch}" for suite, batch in cells])
        panel.set_ylabel(label)
    panels[0].legend(fontsize="small")
    figure.suptitle("vLLM (CPU), SmolLM2-135M-Instruct, greedy")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec-bench", type=int, default=8, help="Spec-Bench-mini questions asked one at a time (round-robin over categories); the batched run asks the next --concurrency")
    parser.add_argument("--humaneval", type=int, default=4, help="HumanEval problems asked one at a time; the batched run asks the next --concurrency")
    parser.add_argument("--past", type=int, default=16, help="past-traffic questions served before measuring")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests running together in the batched runs")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    parser.add_argument("--out", type=Path, default=Path("bench/results/vllm"))
    parser.add_argument("--reuse", action="store_true", help="keep configurations already measured in OUT/work (same plan)")
    parser.add_argument("--propose-timing", action="store_true", help="only time one propose call for 32 rows (ours and ngram's)")
    parser.add_argument("--run-config", help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.propose_timing:
        args.out.mkdir(parents=True, exist_ok=True)
        propose_timing(args.out / "propose_timing.json")
        return
    if args.run_config:
        run_config(args.run_config, json.loads(args.plan.read_text()), args.out)
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    from sam_decoding.models import default_model_dir

    configs = args.configs.split(",")
    unknown = [name for name in configs if name not in CONFIGS]
    if unknown or configs[0] != "plain":
        sys.exit(f"--configs: unknown {unknown}" if unknown else "--configs must start with plain (the reference)")
    notes = []
    if "suffix" in configs and not _has_arctic_inference():
        configs.remove("suffix")
        notes.append("suffix skipped: vLLM's suffix method needs arctic-inference, which is not installed.")
        print(notes[-1], file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    plan = {
        "model": str(default_model_dir()),
        "questions": questions(args.spec_bench, args.humaneval, args.past, args.concurrency),
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "corpus": str((work / "past-answers.sam").resolve()),
    }
    (work / "plan.json").write_text(json.dumps(plan))
    results = {}
    started = time.perf_counter()
    for name in configs:
        if name == "sam":
            build_corpus(plan["model"], results["plain"]["past"]["outputs"], Path(plan["corpus"]))
        out = work / f"{name}.json"
        if not (args.reuse and out.is_file()):
            command = [sys.executable, __file__, "--run-config", name, "--plan", str(work / "plan.json"), "--out", str(out)]
            subprocess.run(command, check=True)
        results[name] = json.loads(out.read_text())
    rows = summarize(results)
    command = "python bench/vllm_bench.py " + " ".join(sys.argv[1:])
    notes.append(
        f"Total {time.perf_counter() - started:.0f} s. Configurations ran one after another on a shared machine: "
        "compare ratios, not absolute speeds. Past traffic: {} questions served by plain, suffix and sam "
        "before measuring (ngram keeps nothing across requests).".format(len(plan["questions"]["past"]))
    )
    (args.out / "results.json").write_text(json.dumps({"command": command, "plan": plan, "rows": rows, "notes": notes}, indent=1))
    write_markdown(args.out / "results.md", rows, command, notes)
    write_chart(args.out / "results.png", rows)
    print((args.out / "results.md").read_text())


def _has_arctic_inference() -> bool:
    import importlib.util

    return importlib.util.find_spec("arctic_inference") is not None


if __name__ == "__main__":
    main()
