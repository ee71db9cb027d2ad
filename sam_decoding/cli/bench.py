"""``sam-decoding bench``: the end-to-end comparison of decoding methods on a suite of questions."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sam_decoding.cli.errors import CliError
from sam_decoding.cli.loading import add_placement_arguments

_EPILOG = """\
suites:
  spec-bench-mini  10 questions per Spec-Bench category translation, summarization, qa,
                   math_reasoning, rag + the first turn of the 80 MT-bench questions (130);
                   the questions ship with sam-decoding (Spec-Bench, Apache-2.0).
                   SAM's static corpus: the model's greedy answers to 60 other Spec-Bench
                   questions (distilled once in batches, a few minutes on 2 CPU cores, then cached)
  humaneval        the 164 HumanEval problems; SAM's static corpus: the Python stdlib source
                   (built once, ~30 s, then cached)
  --questions FILE your JSONL (Spec-Bench 'turns' or --prompt-field); SAM needs --corpus

--quick: 1 question per category, {quick_tokens} new tokens, methods {quick_methods} (each
unless given), and a cheaper static corpus (~200 answers of up to {quick_distill} tokens to short
questions, distilled once in batches and cached). On an idle 2-core machine a first run should
take 4-8 minutes (model conversion and distillation included) and a second 2-5; on a busy one,
much longer. On a machine whose cores other jobs already keep busy, pass --threads 1: torch's
threads would wait on each other (bench says so when the load average is at least the cores).

methods: {methods}, and sam-chainN-fixed for any cap N (all greedy; every output is compared with vanilla's token for token).
The suffix methods run SuffixDecoding (Snowflake's ArcticInference) with the suite corpus's documents in
its global tree; they need the optional package arctic-inference, built against your torch:
  {suffix_install}
and are skipped with a note when it is missing.
Writes SUITE.json (every measurement), SUITE.md (tables) and SUITE.png (speed-up per category) to --out.

--serving: the questions are requests answered one after another, as by a server, and each method
keeps what it learned from the responses it produced before (SuffixDecoding: its global tree of
responses; sam+cache and sam+tr+cache: a response cache, methods only a serving run has); without it
every question sees only the corpus. Adds MAT and speed-up over vanilla per block of requests to
SUITE.md and SUITE.json, and SUITE-serving.png: both per request index.

examples:
  sam-decoding bench --quick
  sam-decoding bench --suite spec-bench-mini --limit 3 --out bench/out
  sam-decoding bench --suite humaneval --methods vanilla,sam,sam+tr
  sam-decoding bench --questions my.jsonl --prompt-field question --corpus docs.sam
  sam-decoding bench --serving --limit 4 --methods vanilla,sam,suffix"""
#: Tokens per answer of a ``--quick`` run and of a full one, unless ``--max-new-tokens`` is given.
QUICK_MAX_NEW_TOKENS = 64
MAX_NEW_TOKENS = 128


def register(commands: Any) -> None:
    """Add the ``bench`` subcommand to ``commands``."""
    from sam_decoding.benchmark.methods import DEFAULT_METHODS, METHOD_NAMES, QUICK_METHOD_NAMES
    from sam_decoding.benchmark.static_corpus import QUICK_DISTILLATION
    from sam_decoding.benchmark.suffix_decoding import ARCTIC_INFERENCE_VERSION
    from sam_decoding.benchmark.suites import SUITE_NAMES

    epilog = _EPILOG.format(
        quick_tokens=QUICK_MAX_NEW_TOKENS,
        quick_methods=", ".join(QUICK_METHOD_NAMES),
        quick_distill=QUICK_DISTILLATION.max_new_tokens,
        methods=", ".join(METHOD_NAMES),
        suffix_install=f"echo 'torch==<your torch version>' > pin.txt && PIP_CONSTRAINT=pin.txt pip install arctic-inference=={ARCTIC_INFERENCE_VERSION}",
    )
    parser = commands.add_parser(
        "bench",
        help="compare decoding methods end to end (speed-up, MAT, equality with vanilla)",
        description="Run vanilla generate, transformers' prompt lookup, PLD, Token Recycling, SAM and "
        "SAM + Token Recycling on a suite of questions and write JSON, Markdown and PNG reports.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--suite", choices=SUITE_NAMES, default="spec-bench-mini", help="built-in suite (default: %(default)s)")
    source.add_argument("--questions", type=Path, metavar="FILE", help="your own JSONL of questions instead of a suite")
    parser.add_argument("--prompt-field", metavar="NAME", help="field of --questions holding the prompt")
    parser.add_argument("--data", type=Path, metavar="PATH", help="Spec-Bench question.jsonl (default: the copy shipped with sam-decoding)")
    parser.add_argument("--model", metavar="MODEL", help="local model directory or hub id (default: SmolLM2-135M-Instruct)")
    add_placement_arguments(parser)
    parser.add_argument("--corpus", type=Path, metavar="FILE", help="static corpus for the sam methods instead of the suite's own")
    parser.add_argument("--heads", type=Path, metavar="FILE", help="heads file for the heads methods (default: the default model's shipped heads)")
    parser.add_argument(
        "--max-new-tokens", type=int, metavar="N", help=f"tokens per answer (default: {MAX_NEW_TOKENS}; {QUICK_MAX_NEW_TOKENS} with --quick)"
    )
    parser.add_argument(
        "--methods",
        metavar="LIST",
        help=f"comma-separated methods (default: {','.join(DEFAULT_METHODS)}; with --quick: {','.join(QUICK_METHOD_NAMES)}; "
        f"all: {','.join(METHOD_NAMES)})",
    )
    parser.add_argument(
        "--reference-profile",
        type=Path,
        metavar="FILE",
        help="cost profile (JSON) under which to also report modelled speed-ups, independent of machine load "
        "(default: --cost-profile's)",
    )
    parser.add_argument(
        "--cost-profile",
        type=Path,
        metavar="FILE",
        help="verification cost profile (JSON, e.g. measured on a GPU) the policy uses instead of this machine's",
    )
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--limit", type=int, metavar="N", help="first N questions of each category")
    limit.add_argument(
        "--quick", action="store_true", help="a first look in minutes: 1 question per category, shorter answers, fewer methods, a smaller corpus"
    )
    parser.add_argument(
        "--serving",
        action="store_true",
        help="answer the questions one after another, each method learning from its earlier responses; report per request index",
    )
    parser.add_argument("--out", type=Path, default=Path("sam-decoding-bench"), metavar="DIR", help="report directory (default: %(default)s)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cache", type=Path, metavar="DIR", help="where suite corpora are cached (default: <sam-decoding cache>/bench)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="only redraw the Markdown table and PNG chart of an earlier run's JSON (e.g. an interrupted one)",
    )
    parser.set_defaults(handler=run)


def _available(methods: list[str]) -> list[str]:
    """``methods`` without those whose optional package is missing (saying so on one line)."""
    from sam_decoding.benchmark.methods import unavailable_methods

    kept, note = unavailable_methods(methods)
    if note:
        print(note, file=sys.stderr, flush=True)
    if not kept:
        raise CliError("no method left to run")
    return kept


def _parse_methods(text: str) -> list[str]:
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write its reports. Returns the exit code."""
    if args.from_json is not None:
        return _rewrite_reports(args.from_json, args.out)
    started = time.perf_counter()
    methods = _checked_methods(args)
    suite = _load_questions(args)
    model, tokenizer, model_name = _load_model(args)
    corpus_path, corpus_description, choice = _static_corpus(args, methods, model, tokenizer, model_name)
    args.out.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    method_objects = _make_methods(args, methods, corpus_path, choice, tokenizer)
    info = _run_info(args, suite, model, model_name, method_objects, corpus_description, started_at)
    stem = args.out / suite.name
    measurements = _measure(args, suite, model, tokenizer, method_objects, info, stem)
    _finish(info, method_objects, measurements, stem, started)
    return 0


def _checked_methods(args: argparse.Namespace) -> list[str]:
    """The methods to run, with ``args``' defaults filled in and every combination checked."""
    from sam_decoding.benchmark.methods import (
        DEFAULT_METHODS,
        QUICK_METHOD_NAMES,
        SUFFIX_METHODS,
        check_method_names,
        needs_static_corpus,
    )

    if args.methods is None:
        args.methods = ",".join(QUICK_METHOD_NAMES if args.quick else DEFAULT_METHODS)
    if args.max_new_tokens is None:
        args.max_new_tokens = QUICK_MAX_NEW_TOKENS if args.quick else MAX_NEW_TOKENS
    try:
        check_method_names(_parse_methods(args.methods), serving=args.serving)
    except ValueError as error:
        raise CliError(str(error)) from None
    methods = _available(_parse_methods(args.methods))
    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise CliError("--threads must be at least 1")
    if args.corpus is not None and not args.corpus.is_file():
        raise CliError(f"{args.corpus}: no such file")
    if args.out.exists() and not args.out.is_dir():
        raise CliError(f"{args.out}: exists and is not a directory")
    if any(needs_static_corpus(name) for name in methods) and args.questions is not None and args.corpus is None:
        raise CliError("the sam methods need --corpus with --questions (or leave them out with --methods)")
    if args.corpus is not None and SUFFIX_METHODS.intersection(methods):
        raise CliError(
            "the suffix methods put the documents of the suite's own corpus in their tree; a --corpus file "
            "does not hold its documents: leave out --corpus or the suffix methods"
        )
    return methods


def _load_questions(args: argparse.Namespace) -> Any:
    """The suite (or --questions file), cut to the questions per category, in round-robin order."""
    from sam_decoding.benchmark.suites import SuiteError, load_questions_file, load_suite

    try:
        if args.questions is not None:
            suite = load_questions_file(args.questions, args.prompt_field)
        else:
            suite = load_suite(args.suite, args.data)
    except SuiteError as error:
        raise CliError(str(error)) from None
    # Round-robin order: a run stopped early (its JSON is checkpointed) still covers every category.
    return suite.limited(_questions_per_category(args)).interleaved()


def _questions_per_category(args: argparse.Namespace) -> int | None:
    return 1 if args.quick else args.limit


def _load_model(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The model, its tokenizer and its name, with a note when the machine is already busy."""
    import torch

    from sam_decoding.benchmark.runner import busy_machine_note
    from sam_decoding.cli.loading import load_model_and_tokenizer
    from sam_decoding.models import DEFAULT_MODEL, default_model_is_converted

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.model is None and not default_model_is_converted():
        print("converting the default model from its GGUF file (once, about 30 s; cached)", file=sys.stderr, flush=True)
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
    # After the model and device are known good: a refused run prints its error line alone.
    busy = busy_machine_note(torch.get_num_threads())
    if busy:
        print(busy, file=sys.stderr, flush=True)
    return model, tokenizer, args.model or DEFAULT_MODEL


def _static_corpus(args: argparse.Namespace, methods: list[str], model: Any, tokenizer: Any,
                   model_name: str) -> tuple[Path | None, str | None, Any]:
    """``(path, description, suite corpus choice)`` of the sam methods' corpus (``None``s if no method needs one)."""
    from sam_decoding.benchmark.methods import needs_static_corpus
    from sam_decoding.cli.loading import open_corpus_for_tokenizer
    from sam_decoding.models import cache_dir

    if not any(needs_static_corpus(name) for name in methods):
        return None, None, None
    if args.corpus is not None:
        open_corpus_for_tokenizer(args.corpus, tokenizer)
        return args.corpus, f"`{args.corpus}` (given with --corpus)", None
    choice = _suite_corpus(args, model, tokenizer, model_name, args.cache or cache_dir() / "bench")
    return choice.path, choice.description, choice


def _make_methods(args: argparse.Namespace, methods: list[str], corpus_path: Path | None, choice: Any,
                  tokenizer: Any) -> list[Any]:
    from sam_decoding.benchmark.methods import make_methods
    from sam_decoding.benchmark.static_corpus import corpus_documents

    return make_methods(
        methods,
        corpus_path,
        _load_cost_profile(args.cost_profile),
        heads=args.heads,
        reference_profile=_load_cost_profile(args.reference_profile),
        corpus_documents=(lambda: corpus_documents(choice, tokenizer)) if choice is not None else None,
        serving=args.serving,
    )


def _run_info(args: argparse.Namespace, suite: Any, model: Any, model_name: str, method_objects: list[Any],
              corpus_description: str | None, started_at: str) -> Any:
    from sam_decoding.benchmark.report import RunInfo
    from sam_decoding.benchmark.runner import machine_description

    argv = getattr(args, "argv", None) or sys.argv[1:]
    return RunInfo(
        suite=suite.name,
        model=Path(model.name_or_path).name if args.model is None else model_name,
        max_new_tokens=args.max_new_tokens,
        methods={method.name: method.description for method in method_objects},
        command="sam-decoding " + shlex.join(argv),
        machine=machine_description(next(model.parameters()).device),
        started_at=started_at,
        static_corpus=corpus_description,
        questions_per_category=_questions_per_category(args),
        serving=args.serving,
    )


def _measure(args: argparse.Namespace, suite: Any, model: Any, tokenizer: Any, method_objects: list[Any],
             info: Any, stem: Path) -> list[Any]:
    """Every method on every question; the JSON is rewritten after each question, so an
    interrupted run keeps what it measured (redraw its tables with --from-json)."""
    from sam_decoding.benchmark.report import write_json
    from sam_decoding.benchmark.results import summarize
    from sam_decoding.benchmark.runner import run_suite

    done: list[Any] = []
    log_lines = not args.no_progress and not sys.stderr.isatty()

    def checkpoint(number: int, measured: list[Any]) -> None:
        done.extend(measured)
        write_json(stem.with_suffix(".json"), info, done, summarize(done))
        if log_lines:
            _log_question(number, len(suite.questions), measured)

    return run_suite(
        suite,
        model,
        tokenizer,
        method_objects,
        max_new_tokens=args.max_new_tokens,
        progress=False if args.no_progress else None,
        on_question=checkpoint,
    )


def _finish(info: Any, method_objects: list[Any], measurements: list[Any], stem: Path, started: float) -> None:
    """Write the reports, print the tables and every output that differs from vanilla's."""
    from sam_decoding.benchmark.report import render_markdown
    from sam_decoding.benchmark.results import summarize

    summaries = summarize(measurements)
    info = dataclasses.replace(info, policies=_policy_reports(method_objects))
    _write_reports(stem, info, measurements, summaries)
    print(render_markdown(info, summaries))
    for mismatch in (m for m in measurements if m.equal_to_reference is False):
        print(
            f"mismatch: {mismatch.method} on question {mismatch.question_id} differs from vanilla "
            f"at new token {mismatch.first_mismatch}",
            file=sys.stderr,
        )
    print(f"wrote {stem}.json, {stem}.md and {stem}.png ({time.perf_counter() - started:.0f} s in all)", file=sys.stderr)


def _load_cost_profile(path: Path | None) -> Any:
    if path is None:
        return None
    from sam_decoding.policy import CostProfile

    try:
        return CostProfile.load(path)
    except ValueError as error:
        raise CliError(str(error)) from None


def _policy_reports(methods: list[Any]) -> dict[str, Any]:
    """Each policy's acceptance calibration and cost table, for the JSON record."""
    return {
        method.name: method.policy.report() for method in methods if getattr(method, "policy", None) is not None
    }


def _write_reports(stem: Path, info: Any, measurements: list[Any], summaries: list[Any]) -> None:
    from sam_decoding.benchmark.chart import write_speedup_chart
    from sam_decoding.benchmark.report import render_markdown, write_json

    serving: dict[str, Any] = {}
    markdown = render_markdown(info, summaries)
    if info.serving:
        from sam_decoding.benchmark.serving import render_serving_markdown, serving_json, write_learning_curve_chart

        serving = {"serving": serving_json(measurements)}
        markdown += render_serving_markdown(measurements)
        write_learning_curve_chart(
            stem.parent / f"{stem.name}-serving.png",
            measurements,
            f"{info.suite}, serving: learning from earlier responses ({info.model}, {info.max_new_tokens} tokens)",
        )
    write_json(stem.with_suffix(".json"), info, measurements, summaries, extra=serving)
    stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
    write_speedup_chart(
        stem.with_suffix(".png"), summaries, f"{info.suite}: speed-up over vanilla ({info.model}, {info.max_new_tokens} tokens)"
    )


def _rewrite_reports(path: Path, out: Path) -> int:
    from sam_decoding.benchmark.report import read_json, render_markdown
    from sam_decoding.benchmark.results import summarize

    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        info, measurements = read_json(path)
    except (ValueError, KeyError, TypeError) as error:
        raise CliError(f"{path}: not a benchmark results file ({error})") from None
    if not measurements:
        raise CliError(f"{path}: holds no measurements")
    out.mkdir(parents=True, exist_ok=True)
    questions = len({m.question_id for m in measurements})
    info = dataclasses.replace(info, notes=[*info.notes, f"Tables redrawn from `{path.name}`: {questions} questions measured."])
    summaries = summarize(measurements)
    _write_reports(out / info.suite, info, measurements, summaries)
    print(render_markdown(info, summaries))
    print(f"wrote {out / info.suite}.json, .md and .png", file=sys.stderr)
    return 0


def _log_question(number: int, total: int, measured: list[Any]) -> None:
    first = measured[0]
    timings = ", ".join(
        f"{m.method} {m.seconds:.1f} s" + ("" if m.equal_to_reference is not False else " (differs)") for m in measured
    )
    print(f"[{number + 1}/{total}] {first.category} {first.question_id}: {first.new_tokens} tokens; {timings}", file=sys.stderr, flush=True)


def _suite_corpus(args: argparse.Namespace, model: Any, tokenizer: Any, model_name: str, cache: Path) -> Any:
    from sam_decoding.benchmark.static_corpus import FULL_DISTILLATION, QUICK_DISTILLATION, distilled_corpus, stdlib_corpus

    if args.suite == "humaneval":
        return stdlib_corpus(tokenizer, cache)
    plan = QUICK_DISTILLATION if args.quick else FULL_DISTILLATION
    return distilled_corpus(
        model, tokenizer, model_name, cache, plan, data=args.data, progress=False if args.no_progress else None
    )
