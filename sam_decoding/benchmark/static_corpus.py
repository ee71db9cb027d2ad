"""The static corpus each suite's SAM methods draft from, built once and cached.

* ``humaneval``: the Python standard library's own source (``**/*.py`` under
  ``sysconfig.get_paths()["stdlib"]``, third-party ``site-packages`` excluded), about 9M tokens.
  It needs no generation and shares no text with the HumanEval problems by construction.
* ``spec-bench-mini``: the target model's own greedy answers (distillation, as in the SAM-Decoding
  paper) to Spec-Bench questions *outside* the evaluated subset: the next questions of each
  sampled category, disjoint by question id from the ones measured.

Corpora are cached under ``<cache>/bench/`` keyed by the tokenizer fingerprint and the build
parameters, so a later run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam_decoding.benchmark.suites import (
    SPEC_BENCH_SAMPLED_CATEGORIES,
    find_spec_bench_data,
    read_spec_bench,
    spec_bench_mini_ids,
)

#: Distilled prompts per sampled Spec-Bench category (5 categories: 60 answers, ~10 minutes on 2 CPU cores).
DISTILL_PER_CATEGORY = 12
#: Length cap of each distilled answer, in tokens.
DISTILL_MAX_NEW_TOKENS = 256
#: Paths under the standard library directory left out of the stdlib corpus (third-party code).
STDLIB_EXCLUDES: tuple[str, ...] = ("site-packages/*", "dist-packages/*")

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class CorpusChoice:
    """A built static corpus file and a one-line description for the report."""

    path: Path
    description: str


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _usable(path: Path, log: Log) -> bool:
    """Whether a cached corpus file exists and loads; an unreadable one (e.g. an older format) is removed."""
    from sam_decoding import StaticAutomaton

    if not path.is_file():
        return False
    try:
        StaticAutomaton.load(path)
    except ValueError as error:
        log(f"cached corpus {path} is unusable ({error}); rebuilding it")
        path.unlink()
        return False
    return True


def build_corpus_file(
    inputs: list[str], output: Path, tokenizer: Any, *, glob: str = "**/*", exclude: tuple[str, ...] = (), metadata: dict[str, Any] | None = None
) -> Any:
    """Tokenize ``inputs`` and save a static automaton to ``output``; returns the automaton."""
    from sam_decoding import StaticAutomaton
    from sam_decoding.corpus import ReadOptions, ReadTally, read_documents, tokenize_documents
    from sam_decoding.models import tokenizer_fingerprint

    tally = ReadTally()
    documents = list(
        tokenize_documents(read_documents(inputs, ReadOptions(glob=glob, exclude=exclude), tally), tokenizer, tally=tally)
    )
    info = {"inputs": inputs, "glob": glob, "exclude": list(exclude), "documents": tally.documents, "tokens": tally.tokens}
    info.update(metadata or {})
    automaton = StaticAutomaton.build(documents, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer), metadata=info)
    output.parent.mkdir(parents=True, exist_ok=True)
    automaton.save(output)
    return automaton


def stdlib_corpus(tokenizer: Any, cache: Path, log: Log = _stderr) -> CorpusChoice:
    """The Python standard library source as a static corpus (built on first use, then cached)."""
    from sam_decoding.models import tokenizer_fingerprint

    root = sysconfig.get_paths()["stdlib"]
    fingerprint = tokenizer_fingerprint(tokenizer)
    path = cache / f"stdlib-{_key(root, sys.version_info[:2], STDLIB_EXCLUDES, fingerprint)}.sam"
    if not _usable(path, log):
        log(f"building the static corpus from the standard library source at {root} (once; cached at {path})")
        started = time.perf_counter()
        automaton = build_corpus_file([root], path, tokenizer, glob="**/*.py", exclude=STDLIB_EXCLUDES, metadata={"corpus": "python-stdlib"})
        log(f"built {automaton.num_tokens:,} tokens in {time.perf_counter() - started:.0f} s")
    from sam_decoding import StaticAutomaton

    tokens = StaticAutomaton.load(path).num_tokens
    return CorpusChoice(
        path,
        f"Python {sys.version_info[0]}.{sys.version_info[1]} standard library source (`**/*.py`, {tokens:,} tokens)",
    )


def distillation_prompt_records(data: Path | None, per_category: int = DISTILL_PER_CATEGORY) -> list[dict]:
    """Spec-Bench questions for distillation: the first ``per_category`` of each sampled category
    that spec-bench-mini does not evaluate."""
    records = read_spec_bench(find_spec_bench_data(data))
    evaluated = spec_bench_mini_ids(records)
    chosen, counts = [], {}
    for record in records:
        category = record["category"]
        if category in SPEC_BENCH_SAMPLED_CATEGORIES and str(record["question_id"]) not in evaluated:
            if counts.get(category, 0) < per_category:
                counts[category] = counts.get(category, 0) + 1
                chosen.append(record)
    return chosen


def distilled_corpus(
    model: Any,
    tokenizer: Any,
    model_name: str,
    cache: Path,
    *,
    data: Path | None = None,
    per_category: int = DISTILL_PER_CATEGORY,
    max_new_tokens: int = DISTILL_MAX_NEW_TOKENS,
    log: Log = _stderr,
) -> CorpusChoice:
    """The model's greedy answers to Spec-Bench questions disjoint from spec-bench-mini's, as a static corpus."""
    from tqdm import tqdm

    from sam_decoding.distillation import Prompt, distill, write_jsonl_atomically
    from sam_decoding.models import tokenizer_fingerprint

    records = distillation_prompt_records(data, per_category)
    fingerprint = tokenizer_fingerprint(tokenizer)
    key = _key(model_name, fingerprint, [r["question_id"] for r in records], max_new_tokens)
    answers = cache / f"spec-bench-distilled-{key}.jsonl"
    path = cache / f"spec-bench-distilled-{key}.sam"
    if not answers.is_file():
        log(
            f"distilling the static corpus: {len(records)} greedy answers of {model_name} to Spec-Bench questions "
            f"outside the evaluated subset, {max_new_tokens} tokens each (once; cached at {answers})"
        )
        cache.mkdir(parents=True, exist_ok=True)
        prompts = [Prompt(str(r["question_id"]), r["turns"][0]) for r in records]
        with tqdm(total=len(prompts), unit=" answers", file=sys.stderr) as progress:
            write_jsonl_atomically(
                distill(model, tokenizer, prompts, max_new_tokens=max_new_tokens, on_answer=lambda p, a: progress.update(1)),
                answers,
            )
    if not _usable(path, log):
        build_corpus_file([str(answers)], path, tokenizer, metadata={"corpus": "spec-bench-distilled", "model": model_name})
    from sam_decoding import StaticAutomaton

    automaton = StaticAutomaton.load(path)
    ids = [int(r["question_id"]) for r in records]
    return CorpusChoice(
        path,
        f"the model's own greedy answers ({max_new_tokens} tokens max) to {len(records)} Spec-Bench questions "
        f"disjoint from the evaluated ones ({per_category} per sampled category, ids {min(ids)}-{max(ids)}; "
        f"{automaton.num_tokens:,} tokens)",
    )
