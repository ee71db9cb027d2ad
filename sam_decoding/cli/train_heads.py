"""``sam-decoding train-heads``: train Medusa draft heads for a model on its own greedy answers."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from sam_decoding.cli.errors import CliError
from sam_decoding.cli.loading import add_placement_arguments

_EPILOG = """\
Three stages, each resumable (re-run the same command after an interruption):
  1. answers: the model answers each prompt with batched greedy decoding, and the last hidden state
     behind every answer token is cached (float16) in --work-dir; with --answers the input is
     already-distilled chat JSONL ('sam-decoding distill' output) and the model reads it once instead;
  2. training: the heads learn, from the cached states, the tokens the model chose 2, 3, ... positions
     later; checkpoints go to --work-dir;
  3. the heads are written to OUTPUT (safetensors, ~0.66 MB per head for a 576-wide model) with the
     base model's identity, and held-out top-1/top-5 accuracy per head is printed (and kept in --report).

A Spec-Bench question file (records with question_id and category) loses the questions that the
spec-bench-mini suite evaluates, so heads are never trained on benchmark questions.

examples:
  sam-decoding train-heads questions.jsonl -o heads.safetensors
  sam-decoding train-heads answers.jsonl --answers -o heads.safetensors --epochs 3
  sam-decoding bench --methods vanilla,heads,sam+heads --heads heads.safetensors"""

# The library's defaults (MedusaHeads, TrainingSettings), repeated so that --help needs no torch;
# a test checks that they agree.
_DEFAULTS = {"num_heads": 4, "epochs": 2, "batch_size": 256, "learning_rate": 1e-3, "held_out_fraction": 0.1}


def register(commands: Any) -> None:
    """Add the ``train-heads`` subcommand to ``commands``."""
    parser = commands.add_parser(
        "train-heads",
        help="train Medusa draft heads for a model on its own greedy answers (for HeadsDrafter)",
        description="Self-distil Medusa-1 draft heads: answer prompts with the model's greedy decoding, cache "
        "the hidden states, train K residual heads to predict the model's next tokens, and save them.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, metavar="JSONL", help="prompts (Spec-Bench 'turns', or --prompt-field), or chat answers with --answers")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="FILE", help="heads file to write (.safetensors)")
    parser.add_argument("--answers", action="store_true", help="JSONL holds distilled chats ({'messages': [user, assistant]}), not prompts")
    parser.add_argument("--prompt-field", metavar="NAME", help="field holding the prompt (default: Spec-Bench's 'turns', or 'prompt')")
    parser.add_argument("--model", metavar="MODEL", help="local model directory or hub id (default: SmolLM2-135M-Instruct)")
    add_placement_arguments(parser)
    parser.add_argument("--work-dir", type=Path, metavar="DIR", help="feature cache and checkpoints (default: OUTPUT with .work appended)")
    parser.add_argument("--num-heads", type=int, default=_DEFAULTS["num_heads"], metavar="K", help="heads, i.e. draft depth (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="answer length cap in tokens (default: %(default)s)")
    parser.add_argument("--max-prompt-tokens", type=int, default=1024, metavar="N", help="skip longer prompts (default: %(default)s)")
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N prompts")
    parser.add_argument("--keep-spec-bench-mini", action="store_true", help="do not drop spec-bench-mini's evaluated questions")
    parser.add_argument("--epochs", type=int, default=_DEFAULTS["epochs"], metavar="N", help="passes over the training positions (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS["batch_size"], metavar="N", help="positions per step (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=_DEFAULTS["learning_rate"], metavar="LR", help="peak AdamW rate (default: %(default)s)")
    parser.add_argument("--held-out", type=float, default=_DEFAULTS["held_out_fraction"], metavar="F", help="share of answers held out (default: %(default)s)")
    parser.add_argument(
        "--draft-vocab", type=int, default=8192, metavar="N",
        help="tokens the heads may propose (the answers' most frequent, then the lowest ids); 0: all (default: %(default)s)",
    )
    parser.add_argument("--batch-tokens", type=int, default=8192, metavar="N", help="padded tokens per answering batch (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=32, metavar="N", help="most answers generated together (default: %(default)s)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--report", type=Path, metavar="FILE", help="write timings and held-out accuracy as JSON")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    parser.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> None:
    positive = ("num_heads", "max_new_tokens", "max_prompt_tokens", "epochs", "batch_size", "batch_tokens", "max_batch")
    for name in positive:
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name} must be at least 1")
    if not 0 <= args.held_out < 1:
        raise CliError("--held-out must lie in [0, 1)")
    if args.draft_vocab < 0:
        raise CliError("--draft-vocab must be >= 0 (0: the whole vocabulary)")
    if not args.learning_rate > 0:
        raise CliError("--learning-rate must be > 0")
    if not args.input.is_file():
        raise CliError(f"{args.input}: no such file")
    if args.output.is_dir() or not args.output.resolve().parent.is_dir():
        raise CliError(f"{args.output}: not a writable file path (does its directory exist?)")


def run(args: argparse.Namespace) -> int:
    """Train and save the heads. Returns the exit code."""
    _check(args)
    import torch

    from sam_decoding.benchmark.runner import machine_description
    from sam_decoding.cli.loading import load_model_and_tokenizer
    from sam_decoding.heads.pipeline import HeadsTrainingJob, accuracy_table, train_heads
    from sam_decoding.heads.training import TrainingSettings

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
    prompts, answers, skipped = _read_inputs(args, tokenizer)
    settings = TrainingSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, held_out_fraction=args.held_out
    )
    job = HeadsTrainingJob(
        output=args.output, work_dir=args.work_dir or args.output.with_name(args.output.name + ".work"),
        input_name=args.input.name, num_heads=args.num_heads, settings=settings, draft_vocab=args.draft_vocab,
        max_new_tokens=args.max_new_tokens, batch_tokens=args.batch_tokens, max_batch=args.max_batch,
        record={"command": "sam-decoding " + shlex.join(getattr(args, "argv", None) or sys.argv[1:]),
                "prompts_skipped_as_too_long": skipped, "machine": machine_description()},
    )
    try:
        result = train_heads(model, tokenizer, job, prompts=prompts, answers=answers,
                             show_progress=not args.no_progress, log=_log)
    except ValueError as error:
        raise CliError(str(error)) from None
    if args.report is not None:
        from sam_decoding.atomic_file import replacing_atomically

        with replacing_atomically(args.report) as temporary:
            Path(temporary).write_text(json.dumps(result.record, indent=1) + "\n", encoding="utf-8")
    report = result.report
    print(accuracy_table(report))
    print(
        f"wrote {args.output}: {result.heads.num_heads} heads for {result.heads.identity.fingerprint} "
        f"({args.output.stat().st_size / 1e6:.2f} MB); {report.train_positions} training positions, "
        f"features {result.feature_seconds:.0f} s + training {report.seconds:.0f} s = {result.total_seconds:.0f} s this run"
    )
    return 0


def _read_inputs(args: argparse.Namespace, tokenizer: Any) -> tuple[list[Any] | None, list[Any] | None, int]:
    """``(prompts, None, skipped)`` to answer, or ``(None, answers, 0)`` already written (``--answers``)."""
    if args.answers:
        answers = _read_answers(args.input, tokenizer, args.limit)
        _log(f"{len(answers)} answers in {args.input}")
        return None, answers, 0
    prompts, skipped, excluded = _read_prompts(args, tokenizer)
    _log(f"{len(prompts)} prompts from {args.input} ({excluded} evaluated by spec-bench-mini left out, "
         f"{skipped} longer than {args.max_prompt_tokens} tokens skipped)")
    return prompts, None, skipped


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _read_prompts(args: argparse.Namespace, tokenizer: Any) -> tuple[list[Any], int, int]:
    from sam_decoding.benchmark.suites import spec_bench_mini_ids
    from sam_decoding.corpus import CorpusError
    from sam_decoding.distillation import read_prompts
    from sam_decoding.heads.self_distillation import EncodedPrompt
    from sam_decoding.jsonl import jsonl_records
    from sam_decoding.prompts import chat_prompt_ids

    try:
        prompts = read_prompts(args.input, args.prompt_field)
        with open(args.input, encoding="utf-8") as handle:
            records = [record for _, record in jsonl_records(handle, str(args.input), CorpusError)]
    except CorpusError as error:
        raise CliError(str(error)) from None
    excluded: set[str] = set()
    spec_bench = all(isinstance(r, dict) and "question_id" in r and "category" in r for r in records)
    if spec_bench and not args.keep_spec_bench_mini:
        excluded = spec_bench_mini_ids(records)
    kept = [p for p in prompts if p.prompt_id not in excluded]
    if args.limit is not None:
        kept = kept[: args.limit]
    encoded, skipped = [], 0
    for prompt in kept:
        ids = chat_prompt_ids(tokenizer, prompt.text)[0]
        if ids.shape[0] > args.max_prompt_tokens:
            skipped += 1
            continue
        encoded.append(EncodedPrompt(prompt.prompt_id, ids))
    if not encoded:
        raise CliError(f"{args.input}: no prompts left to answer")
    return encoded, skipped, len(prompts) - len([p for p in prompts if p.prompt_id not in excluded])


def _read_answers(path: Path, tokenizer: Any, limit: int | None) -> list[tuple[str, Any, int]]:
    from sam_decoding.corpus import CorpusError
    from sam_decoding.jsonl import jsonl_records
    from sam_decoding.prompts import chat_prompt_ids

    sequences = []
    with open(path, encoding="utf-8") as handle:
        try:
            for number, record in jsonl_records(handle, str(path), CorpusError):
                messages = record.get("messages") if isinstance(record, dict) else None
                if (
                    not isinstance(messages, list) or len(messages) < 2
                    or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages[:2])
                ):
                    raise CliError(f"{path}:{number}: expected {{'messages': [user, assistant]}} (sam-decoding distill output)")
                prompt = chat_prompt_ids(tokenizer, messages[0]["content"])[0]
                full = tokenizer.apply_chat_template(messages[:2], return_tensors="pt", return_dict=True)["input_ids"][0]
                if full.shape[0] <= prompt.shape[0] or not bool((full[: prompt.shape[0]] == prompt).all()):
                    raise CliError(f"{path}:{number}: the chat template does not extend the prompt with the answer")
                sequences.append((str(record.get("id", number)), full.long(), int(prompt.shape[0])))
                if limit is not None and len(sequences) >= limit:
                    break
        except CorpusError as error:
            raise CliError(str(error)) from None
    if not sequences:
        raise CliError(f"{path}: no answers")
    return sequences
