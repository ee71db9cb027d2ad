"""The static corpus each suite's SAM methods draft from, built once and cached.

* ``humaneval``: the Python standard library's own source (``**/*.py`` under
  ``sysconfig.get_paths()["stdlib"]``, third-party ``site-packages`` excluded), about 9M tokens.
  It needs no generation and shares no text with the HumanEval problems by construction.
* ``spec-bench-mini``: the target model's own greedy answers (distillation, as in the SAM-Decoding
  paper) to Spec-Bench questions *outside* the evaluated subset: the next questions of each
  sampled category, disjoint by question id from the ones measured. A :class:`DistillationPlan`
  says how many and how long; ``--quick`` uses a cheaper one than a full run.

Corpora are cached under ``<cache>/bench/`` keyed by the tokenizer fingerprint and the build
parameters, so a later run reuses them. Distilled answers are appended to the cache as each batch
finishes, so an interrupted first run goes on where it stopped.
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

#: Paths under the standard library directory left out of the stdlib corpus (third-party code).
STDLIB_EXCLUDES: tuple[str, ...] = ("site-packages/*", "dist-packages/*")

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DistillationPlan:
    """Which Spec-Bench questions the spec-bench-mini corpus answers, and how long the answers are.

    Per sampled category, the first ``per_category`` questions that spec-bench-mini does not
    evaluate, leaving out those whose chat-rendered prompt is longer than ``max_prompt_tokens``
    tokens, if set: prefill dominates the cost of long prompts (summarization and rag average ~770
    tokens) and batching does not amortize it as it does decoding; SAM drafts those categories
    mostly from the prompt itself anyway. Answers hold at most ``max_new_tokens`` tokens.
    """

    per_category: int
    max_new_tokens: int
    max_prompt_tokens: int | None = None


#: A full run's corpus: 12 answers of up to 256 tokens per sampled category (60 answers).
FULL_DISTILLATION = DistillationPlan(per_category=12, max_new_tokens=256)
#: ``--quick``'s corpus: up to 64 answers of up to 64 tokens per sampled category, prompts of at most
#: 320 tokens (196 answers: translation, qa, math_reasoning and 4 summarization ones; about 1-2
#: minutes in batches on 2 CPU cores).
QUICK_DISTILLATION = DistillationPlan(per_category=64, max_new_tokens=64, max_prompt_tokens=320)


@dataclass(frozen=True)
class CorpusChoice:
    """A built static corpus file and a one-line description for the report.

    ``inputs``, ``glob`` and ``exclude`` say where its documents were read from (``inputs`` empty:
    unknown, e.g. a corpus file given by the user), so drafters that need the documents themselves
    (SuffixDecoding's global tree) can read the same ones: :func:`corpus_documents`.
    """

    path: Path
    description: str
    inputs: tuple[str, ...] = ()
    glob: str = "**/*"
    exclude: tuple[str, ...] = ()


def _tokenized_documents(inputs: list[str], tokenizer: Any, glob: str, exclude: tuple[str, ...], tally: Any) -> list[Any]:
    from sam_decoding.corpus import ReadOptions, read_documents, tokenize_documents

    return list(tokenize_documents(read_documents(inputs, ReadOptions(glob=glob, exclude=exclude), tally), tokenizer, tally=tally))


def corpus_documents(choice: CorpusChoice, tokenizer: Any) -> list[Any]:
    """The token arrays the static corpus ``choice`` was built from (read and tokenized again, as when it was built)."""
    from sam_decoding.corpus import ReadTally

    if not choice.inputs:
        raise ValueError(f"the documents of {choice.path} are unknown (a corpus file given as is)")
    return _tokenized_documents(list(choice.inputs), tokenizer, choice.glob, choice.exclude, ReadTally())


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _usable(path: Path, log: Log) -> bool:
    """Whether a cached corpus file exists and loads; an unreadable one (e.g. an older format) is removed."""
    from sam_decoding.automaton import StaticAutomaton

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
    from sam_decoding.automaton import StaticAutomaton
    from sam_decoding.corpus import ReadTally
    from sam_decoding.models import tokenizer_fingerprint

    tally = ReadTally()
    documents = _tokenized_documents(inputs, tokenizer, glob, exclude, tally)
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
    from sam_decoding.automaton import StaticAutomaton

    tokens = StaticAutomaton.load(path).num_tokens
    return CorpusChoice(
        path,
        f"Python {sys.version_info[0]}.{sys.version_info[1]} standard library source (`**/*.py`, {tokens:,} tokens)",
        (root,),
        "**/*.py",
        STDLIB_EXCLUDES,
    )


def distillation_prompt_records(data: Path | None, plan: DistillationPlan, tokenizer: Any = None) -> list[dict]:
    """The Spec-Bench questions ``plan`` distills, in file order (``tokenizer`` is needed for a prompt length cap)."""
    from sam_decoding.prompts import chat_prompt_ids

    if plan.max_prompt_tokens is not None and tokenizer is None:
        raise ValueError("a distillation plan with a prompt length cap needs the tokenizer")
    records = read_spec_bench(find_spec_bench_data(data))
    evaluated = spec_bench_mini_ids(records)
    chosen = []
    counts: dict[str, int] = {}
    for record in records:
        category = record["category"]
        if category not in SPEC_BENCH_SAMPLED_CATEGORIES or str(record["question_id"]) in evaluated:
            continue
        if counts.get(category, 0) >= plan.per_category:
            continue
        if plan.max_prompt_tokens is not None and chat_prompt_ids(tokenizer, record["turns"][0]).shape[1] > plan.max_prompt_tokens:
            continue
        counts[category] = counts.get(category, 0) + 1
        chosen.append(record)
    return chosen


def distilled_corpus(
    model: Any,
    tokenizer: Any,
    model_name: str,
    cache: Path,
    plan: DistillationPlan,
    *,
    data: Path | None = None,
    progress: bool | None = None,
    log: Log = _stderr,
) -> CorpusChoice:
    """The model's greedy answers to Spec-Bench questions disjoint from spec-bench-mini's, as a static corpus.

    Distilled (in batches) on first use and cached; a partly distilled cache from an interrupted
    run is completed, not redone. ``progress``: ``None`` shows a bar on a terminal only.
    """
    import torch
    from tqdm import tqdm

    from sam_decoding.distillation import DEFAULT_BATCH_SIZE, Prompt, append_jsonl, distill, resume_distill_output
    from sam_decoding.models import tokenizer_fingerprint

    records = distillation_prompt_records(data, plan, tokenizer)
    fingerprint = tokenizer_fingerprint(tokenizer)
    key = _key(model_name, fingerprint, [r["question_id"] for r in records], plan.max_new_tokens)
    answers = cache / f"spec-bench-distilled-{key}.jsonl"
    path = cache / f"spec-bench-distilled-{key}.sam"
    cache.mkdir(parents=True, exist_ok=True)
    done = resume_distill_output(answers)
    missing = [Prompt(str(r["question_id"]), r["turns"][0]) for r in records if str(r["question_id"]) not in done]
    if missing:
        resuming = f", resuming after {len(records) - len(missing)}" if done else ""
        log(
            f"distilling the static corpus (once, cached in {cache}): greedy answers of {model_name} to "
            f"{len(records)} Spec-Bench questions outside the evaluated ones, up to {plan.max_new_tokens} tokens each{resuming}"
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        bar = tqdm(total=len(missing), unit=" answers", file=sys.stderr, disable=not progress if progress is not None else None)
        # Off a terminal (a log file, CI) the bar is off; a line per batch shows progress instead.
        log_batches = bar.disable and progress is not False

        count = 0

        def answered(prompt: Prompt, answer: str) -> None:
            nonlocal count
            count += 1
            bar.update(1)
            if log_batches and (count % DEFAULT_BATCH_SIZE == 0 or count == len(missing)):
                log(f"distilled {count}/{len(missing)} answers ({time.perf_counter() - started:.0f} s)")

        with bar:
            append_jsonl(
                distill(
                    model,
                    tokenizer,
                    missing,
                    max_new_tokens=plan.max_new_tokens,
                    batch_size=DEFAULT_BATCH_SIZE,
                    on_answer=answered,
                    on_step=lambda step: bar.set_postfix_str(f"batch at token {step}/{plan.max_new_tokens}", refresh=False),
                ),
                answers,
            )
        log(
            f"distilled {len(missing)} answers in {time.perf_counter() - started:.0f} s "
            f"({time.process_time() - cpu_started:.0f} s of CPU time, {torch.get_num_threads()} torch threads)"
        )
        path.unlink(missing_ok=True)
    if not _usable(path, log):
        build_corpus_file([str(answers)], path, tokenizer, metadata={"corpus": "spec-bench-distilled", "model": model_name})
    from sam_decoding.automaton import StaticAutomaton

    automaton = StaticAutomaton.load(path)
    ids = [int(r["question_id"]) for r in records]
    return CorpusChoice(
        path,
        f"the model's own greedy answers ({plan.max_new_tokens} tokens max) to {len(records)} Spec-Bench questions "
        f"disjoint from the evaluated ones (ids {min(ids)}-{max(ids)}; {automaton.num_tokens:,} tokens)",
        (str(answers),),
    )
