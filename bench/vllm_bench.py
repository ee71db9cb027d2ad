"""vLLM with and without speculative decoding, side by side: plain, empty drafts, ``ngram``, ``suffix``, sam-decoding.

One driver process holds one engine per configuration and interleaves them: every prompt (batch 1)
or every group of prompts (batch 8, 32) is served by each engine in turn, the order rotating, so the
ratios between configurations are measured under the same machine load. Before measuring, every
engine serves the same past traffic, and no engine is ever measured on a prompt it answered before
(the batch sizes ask different questions). Our corpus holds plain vLLM's answers to that past
traffic, so it saw what ``suffix``'s global tree saw; ours also keeps a response cache, as in the
README's serve command. A cold-start case gives fresh ``suffix`` and sam-decoding engines HumanEval
problems with nothing served before; ours has a corpus of Python standard-library source.

``empty`` is a proposer that never drafts: what speculative decoding costs the engine by itself.
A configuration may carry a preloaded library: ``plain@iomp`` is plain vLLM with TCMalloc and Intel
OpenMP in ``LD_PRELOAD``, ``plain@tcmalloc`` with TCMalloc only.

Reported per cell and configuration: tokens per second and its ratio to plain vLLM (``plain``, no
preload) per round, tokens per target forward pass, acceptance per draft position, mismatches
against plain vLLM's token ids, and the load average. JSON, Markdown and a PNG chart go to ``--out``.

Run with the vLLM virtual environment (see docs/vllm.md), with sam-decoding importable, e.g.::

    VLLM_CPU_KVCACHE_SPACE=1 python bench/vllm_bench.py --batch1 4 --rounds8 2 --rounds32 1 --cold 4
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

K = 8
SPECULATIVE: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "empty": {"method": "custom_class", "model": "vllm_bench.EmptyProposer", "num_speculative_tokens": K},
    "ngram": {"method": "ngram", "num_speculative_tokens": K, "prompt_lookup_min": 2, "prompt_lookup_max": 4},
    "suffix": {"method": "suffix", "num_speculative_tokens": K},
    "sam": {"method": "custom_class", "model": "sam_decoding.vllm.SamProposer", "num_speculative_tokens": K},
}
COLD = ("suffix-cold", "sam-cold")
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


class EmptyProposer:
    """A ``custom_class`` proposer that never drafts: every row gets an empty draft, every step."""

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        pass

    def propose(self, sampled_token_ids: list[list[int]], *args: Any, **kwargs: Any) -> list[list[int]]:
        return [[] for _ in sampled_token_ids]


def preload_paths(preload: str) -> str:
    """``LD_PRELOAD`` for a preload name: ``""`` (vLLM's own choice), ``tcmalloc``, ``iomp`` (TCMalloc + Intel OpenMP)."""
    if preload == "":
        return ""
    iomp = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libiomp5.so")))
    paths = {"tcmalloc": [TCMALLOC], "iomp": [TCMALLOC, *iomp[:1]]}.get(preload)
    if paths is None:
        sys.exit(f"unknown preload {preload!r}: use tcmalloc or iomp")
    missing = [path for path in paths if not os.path.exists(path)] or ([] if preload != "iomp" or iomp else ["libiomp5.so (pip install intel-openmp)"])
    if missing:
        sys.exit(f"preload {preload}: not found: {', '.join(missing)}")
    return ":".join(paths)


# ---- questions ----------------------------------------------------------------------------------


def questions(batch1: int, rounds8: int, rounds32: int, past: int, cold: int) -> dict[str, list[str]]:
    """Disjoint prompt lists: past traffic, batch 1, each round of 8 and of 32, and the cold-start HumanEval problems.

    The main lists mix Spec-Bench-mini (round-robin over categories) with one HumanEval problem in
    four; the cold-start problems come from the end of HumanEval, which the main lists never reach.
    """
    from sam_decoding.benchmark.suites import load_humaneval, load_spec_bench_mini

    spec = [q.prompt for q in load_spec_bench_mini().interleaved().questions]
    code = [q.prompt for q in load_humaneval().questions]
    cold_code, code = code[len(code) - cold :] if cold else [], code[: len(code) - cold]
    pool = []
    while spec or code:
        for source in (spec, spec, spec, code):
            if source:
                pool.append(source.pop(0))
    sizes = {"past": past, "main/1": batch1, **{f"main/8/{r}": 8 for r in range(rounds8)}, **{f"main/32/{r}": 32 for r in range(rounds32)}}
    if sum(sizes.values()) > len(pool):
        sys.exit(f"asked for {sum(sizes.values())} prompts, the suites hold {len(pool)}")
    plan, start = {}, 0
    for name, size in sizes.items():
        plan[name], start = pool[start : start + size], start + size
    plan["cold/1"] = cold_code
    return plan


# ---- engines ------------------------------------------------------------------------------------


class Engine:
    """One vLLM engine (its own engine-core and worker processes) for one configuration."""

    def __init__(self, label: str, model: str, max_num_seqs: int, additional: dict[str, Any]) -> None:
        from vllm import LLM

        self.label = label
        self.config, _, self.preload = label.partition("@")
        speculative = SPECULATIVE[self.config.removesuffix("-cold")]
        saved = os.environ.get("LD_PRELOAD")
        os.environ["LD_PRELOAD"] = preload_paths(self.preload)
        started = time.perf_counter()
        try:
            self.llm = LLM(
                model=model, dtype="float32", max_model_len=2048, seed=0, enforce_eager=True, max_num_seqs=max_num_seqs,
                disable_log_stats=False, speculative_config=speculative, additional_config=additional,
            )
        finally:
            if saved is None:
                os.environ.pop("LD_PRELOAD", None)
            else:
                os.environ["LD_PRELOAD"] = saved
        self.start_seconds = time.perf_counter() - started
        self.totals: dict[str, Any] = {"drafts": 0, "draft_tokens": 0, "accepted": 0, "per_position": []}
        if speculative is not None:
            self._tap_speculative_stats()
        print(f"{label}: engine up in {self.start_seconds:.0f} s", file=sys.stderr, flush=True)

    def _tap_speculative_stats(self) -> None:
        """Count this engine's own speculative statistics as its stat logger receives them.

        ``LLM.get_metrics()`` reads the process-wide Prometheus registry, and every new engine's
        Prometheus logger unregisters the collectors of the engines before it, so with several
        engines in one process it reports only the last one. The statistics each step hands to this
        engine's logger are its own, so they are counted here instead.
        """
        loggers = getattr(self.llm.llm_engine.logger_manager, "stat_loggers", [])
        taps = [logger.spec_decoding_prom for logger in loggers if getattr(logger, "spec_decoding_prom", None) is not None]
        if not taps:
            sys.exit(f"{self.label}: vLLM's speculative statistics are not reachable in this version; the bench cannot count accepted tokens")
        prom, original = taps[0], taps[0].observe
        totals = self.totals

        def observe(stats: Any, engine_idx: int = 0) -> None:
            totals["drafts"] += stats.num_drafts
            totals["draft_tokens"] += stats.num_draft_tokens
            totals["accepted"] += stats.num_accepted_tokens
            per_position = totals["per_position"]
            per_position.extend([0] * (len(stats.num_accepted_tokens_per_pos) - len(per_position)))
            for position, count in enumerate(stats.num_accepted_tokens_per_pos):
                per_position[position] += count
            original(stats, engine_idx)

        prom.observe = observe

    def generate(self, prompts: list[list[int]], max_tokens: int) -> dict[str, Any]:
        """Serve ``prompts`` together; token ids, seconds, load average and the speculative counters of this call."""
        from vllm import SamplingParams

        before = self._counters()
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
        seconds = time.perf_counter() - started
        after = self._counters()
        width = max(len(after["per_position"]), len(before["per_position"]))
        pad = lambda values: list(values) + [0] * (width - len(values))  # noqa: E731
        return {
            "outputs": [list(output.outputs[0].token_ids) for output in outputs],
            "seconds": seconds,
            "load": round((load_before + os.getloadavg()[0]) / 2, 2),
            **{key: after[key] - before[key] for key in ("drafts", "draft_tokens", "accepted")},
            "per_position": [a - b for a, b in zip(pad(after["per_position"]), pad(before["per_position"]))],
        }

    def _counters(self) -> dict[str, Any]:
        return {**self.totals, "per_position": list(self.totals["per_position"])}


def chat_ids(tokenizer: Any, question: str) -> list[int]:
    """Token ids of ``question`` as a one-turn chat, ready for the assistant's answer."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_corpus(tokenizer: Any, documents: list[list[int]], path: Path) -> None:
    import sam_decoding as sd
    from sam_decoding.models import tokenizer_fingerprint

    sd.StaticAutomaton.build([d for d in documents if d], tokenizer_fingerprint=tokenizer_fingerprint(tokenizer)).save(path)


def stdlib_documents(tokenizer: Any, max_bytes: int) -> tuple[list[list[int]], list[str]]:
    """This Python's standard-library sources (top-level modules, sorted by name) up to ``max_bytes`` of text, tokenized."""
    import sysconfig

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    documents, names, total = [], [], 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if total + len(text) > max_bytes:
            continue
        documents.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
        names.append(path.name)
        total += len(text)
    return documents, names


# ---- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from sam_decoding.models import default_model_dir

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The engines' processes import EmptyProposer from this file.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    labels = args.configs.split(",")
    for label in labels:
        config, _, preload = label.partition("@")
        if config not in SPECULATIVE:
            sys.exit(f"--configs: unknown configuration {config!r} (one of {', '.join(SPECULATIVE)})")
        preload_paths(preload)
    if labels[0] != "plain":
        sys.exit("--configs must start with plain (the reference)")
    if "suffix" in args.configs and not _has_arctic_inference():
        sys.exit("suffix needs arctic-inference (see docs/vllm.md)")
    model = str(default_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(model)
    plan = questions(args.batch1, args.rounds8, args.rounds32, args.past, args.cold)
    prompts = {cell: [chat_ids(tokenizer, q) for q in qs] for cell, qs in plan.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    started = time.perf_counter()
    meta: dict[str, Any] = {"started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "load_at_start": os.getloadavg()}

    max_seqs = 32 if args.rounds32 else 8
    engines: dict[str, Engine] = {}
    past: dict[str, Any] = {}
    engines["plain"] = Engine("plain", model, max_seqs, {})
    past["plain"] = engines["plain"].generate(prompts["past"], args.max_tokens)
    past_corpus = work / "past-answers.sam"
    build_corpus(tokenizer, past["plain"]["outputs"], past_corpus)
    ours = {"sam_decoding": {"corpus": str(past_corpus.resolve()), "response_cache": {}}}
    for label in labels[1:]:
        engines[label] = Engine(label, model, max_seqs, ours if label.startswith("sam") else {})
        past[label] = engines[label].generate(prompts["past"], args.max_tokens)
    if args.cold:
        documents, names = stdlib_documents(tokenizer, args.cold_corpus_bytes)
        stdlib_corpus = work / "python-stdlib.sam"
        build_corpus(tokenizer, documents, stdlib_corpus)
        meta["cold_corpus"] = {"files": len(names), "tokens": sum(map(len, documents)), "bytes": stdlib_corpus.stat().st_size}
        cold_ours = {"sam_decoding": {"corpus": str(stdlib_corpus.resolve()), "response_cache": {}}}
        for label in COLD:
            engines[label] = Engine(label, model, max_seqs, cold_ours if label.startswith("sam") else {})
    meta["engine_start_seconds"] = {label: round(engine.start_seconds, 1) for label, engine in engines.items()}

    # Interleaved: each unit of work (one prompt at batch 1, one group at 8 and 32) goes to every engine in turn.
    units: list[tuple[str, int, int, list[list[int]], list[str]]] = []
    for index, prompt in enumerate(prompts["main/1"]):
        units.append(("main", 1, index, [prompt], labels))
    for r in range(args.rounds8):
        units.append(("main", 8, r, prompts[f"main/8/{r}"], labels))
    for r in range(args.rounds32):
        units.append(("main", 32, r, prompts[f"main/32/{r}"], labels))
    cold_labels = ["plain", *(["ngram"] if "ngram" in labels else []), *COLD]
    for index, prompt in enumerate(prompts["cold/1"]):
        units.append(("cold", 1, index, [prompt], cold_labels))
    runs = []
    for turn, (cell, batch, index, group, order) in enumerate(units):
        shift = turn % len(order)
        for label in order[shift:] + order[:shift]:
            result = engines[label].generate(group, args.max_tokens)
            runs.append({"cell": cell, "batch": batch, "round": index, "config": label, **result})
            tokens = sum(map(len, result["outputs"]))
            print(f"{cell} batch {batch} #{index} {label}: {tokens / result['seconds']:.1f} tok/s load {result['load']}", file=sys.stderr, flush=True)
    meta["total_seconds"] = round(time.perf_counter() - started)
    command = "python bench/vllm_bench.py " + " ".join(sys.argv[1:])
    rows = summarize(runs)
    (args.out / "results.json").write_text(json.dumps({"command": command, "meta": meta, "plan": plan, "rows": rows, "runs": runs}))
    write_markdown(args.out / "results.md", rows, command, meta, plan)
    write_chart(args.out / "results.png", rows)
    print((args.out / "results.md").read_text())


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell, batch size and configuration: sums over its rounds, and the per-round ratios to plain."""
    reference = {(r["cell"], r["batch"], r["round"]): r for r in runs if r["config"] == "plain"}
    grouped: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        grouped.setdefault((r["cell"], r["batch"], r["config"]), []).append(r)
    rows = []
    for (cell, batch, config), items in grouped.items():
        tokens = sum(sum(map(len, r["outputs"])) for r in items)
        seconds = sum(r["seconds"] for r in items)
        plain_items = [reference[(cell, batch, r["round"])] for r in items]
        plain_tokens = sum(sum(map(len, r["outputs"])) for r in plain_items)
        plain_seconds = sum(r["seconds"] for r in plain_items)
        # Per round (batch 8, 32) or per prompt (batch 1): the spread of the ratio says how far noise reaches.
        ratios = [
            (sum(map(len, r["outputs"])) / r["seconds"]) / (sum(map(len, p["outputs"])) / p["seconds"]) for r, p in zip(items, plain_items)
        ]
        accepted = sum(r["accepted"] for r in items)
        drafts = max(sum(r["drafts"] for r in items), 1)
        width = max(len(r["per_position"]) for r in items)
        per_position = [sum((r["per_position"] + [0] * width)[i] for r in items) for i in range(width)]
        rows.append(
            {
                "cell": cell,
                "batch": batch,
                "config": config,
                "requests": sum(len(r["outputs"]) for r in items),
                "tokens": tokens,
                "seconds": round(seconds, 2),
                "tokens_per_second": round(tokens / seconds, 2),
                "vs_plain": round((tokens / seconds) / (plain_tokens / plain_seconds), 3),
                "vs_plain_per_round": [round(x, 3) for x in ratios],
                "vs_plain_spread": round(max(ratios) - min(ratios), 3) if len(ratios) > 1 else None,
                "tokens_per_target_pass": round(tokens / max(tokens - accepted, 1), 3),
                "draft_tokens": sum(r["draft_tokens"] for r in items),
                "accepted_tokens": accepted,
                "acceptance_per_position": [round(count / drafts, 3) for count in per_position],
                "mismatches": sum(a != b for r, p in zip(items, plain_items) for a, b in zip(r["outputs"], p["outputs"])),
                "load_min": min(r["load"] for r in items),
                "load_max": max(r["load"] for r in items),
            }
        )
    return rows


def _order(row: dict[str, Any]) -> tuple:
    config, _, preload = row["config"].partition("@")
    names = [*SPECULATIVE, *COLD]
    return (row["cell"] != "main", row["batch"], preload, names.index(config))


def write_markdown(path: Path, rows: list[dict[str, Any]], command: str, meta: dict[str, Any], plan: dict[str, list[str]]) -> None:
    counts = {cell: len(qs) for cell, qs in plan.items()}
    lines = [
        "# vLLM side by side: plain, empty drafts, ngram, suffix and sam-decoding",
        "",
        f"Command: `{command}` (started {meta['started_utc']} UTC, load average at start "
        f"{' '.join(f'{x:.2f}' for x in meta['load_at_start'])}, {meta['total_seconds']} s in all).",
        "",
        f"Prompts: {counts}. Every engine served the {counts['past']} past-traffic prompts first (cold-start engines: none). "
        "Ratios are to plain vLLM measured right beside each run; `per round` lists them per prompt (batch 1) or per group.",
        "",
        "| cell | batch | config | requests | tok/s | vs plain | per round | tokens / target pass | acceptance by draft position | mismatches | load |",
        "|---|---:|---|---:|---:|---:|---|---:|---|---:|---|",
    ]
    for row in sorted(rows, key=_order):
        positions = " ".join(f"{value:.2f}" for value in row["acceptance_per_position"]) or "-"
        rounds = " ".join(f"{value:.2f}" for value in row["vs_plain_per_round"])
        lines.append(
            f"| {row['cell']} | {row['batch']} | {row['config']} | {row['requests']} | {row['tokens_per_second']:.1f} | "
            f"{row['vs_plain']:.2f}x | {rounds} | {row['tokens_per_target_pass']:.2f} | {positions} | {row['mismatches']} | "
            f"{row['load_min']}-{row['load_max']} |"
        )
    if "cold_corpus" in meta:
        c = meta["cold_corpus"]
        lines += ["", f"Cold-start corpus: {c['files']} Python standard-library modules, {c['tokens']:,} tokens, {c['bytes']:,} bytes on disk."]
    lines += ["", "Engine start (s): " + ", ".join(f"{k} {v}" for k, v in meta["engine_start_seconds"].items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_chart(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=_order)
    cells = list(dict.fromkeys((row["cell"], row["batch"]) for row in rows))
    configs = list(dict.fromkeys(row["config"] for row in rows if row["config"] != "plain"))
    by_key = {(row["cell"], row["batch"], row["config"]): row for row in rows}
    figure, panels = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / max(len(configs), 1)
    for panel, (field, label) in zip(panels, (("vs_plain", "tokens/s vs plain vLLM (x)"), ("tokens_per_target_pass", "tokens per target pass"))):
        for index, name in enumerate(configs):
            positions = [cell + (index - (len(configs) - 1) / 2) * width for cell in range(len(cells))]
            panel.bar(positions, [by_key.get((*cell, name), {}).get(field, 0.0) for cell in cells], width=width, label=name)
        panel.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        panel.set_xticks(range(len(cells)))
        panel.set_xticklabels([f"{cell}\nbatch {batch}" for cell, batch in cells])
        panel.set_ylabel(label)
    panels[0].legend(fontsize="small", ncol=2)
    figure.suptitle("vLLM 0.32 (CPU), SmolLM2-135M-Instruct fp32, greedy, configurations interleaved")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _has_arctic_inference() -> bool:
    import importlib.util

    return importlib.util.find_spec("arctic_inference") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="plain,empty,ngram,suffix,sam", help="comma-separated, starting with plain; each of " + ", ".join(SPECULATIVE) + ", optionally with @tcmalloc or @iomp")
    parser.add_argument("--batch1", type=int, default=4, help="prompts asked one at a time")
    parser.add_argument("--rounds8", type=int, default=2, help="groups of 8 prompts asked together")
    parser.add_argument("--rounds32", type=int, default=1, help="groups of 32 prompts asked together")
    parser.add_argument("--past", type=int, default=8, help="past-traffic prompts every engine serves before measuring")
    parser.add_argument("--cold", type=int, default=4, help="HumanEval problems for the cold-start case (0: none)")
    parser.add_argument("--cold-corpus-bytes", type=int, default=1_000_000, help="Python source text in the cold-start corpus (bytes)")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--out", type=Path, default=Path("bench/results/vllm"))
    run(parser.parse_args())


if __name__ == "__main__":
    main()
