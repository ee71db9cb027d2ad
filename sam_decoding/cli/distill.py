"""``sam-decoding distill``: answer prompts with the model's own greedy decoding into a chat corpus."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from sam_decoding.cli.errors import CliError
from sam_decoding.cli.loading import add_placement_arguments, load_model_and_tokenizer
from sam_decoding.distillation import DEFAULT_BATCH_SIZE

_EPILOG = """\
The output is chat JSONL ({"id", "messages": [user, assistant]} per line), ready for 'build'.
Answers come from plain greedy decoding, so they are the text the model itself tends to write.
Prompts are answered --batch-size at a time (left padded), grouped by length, and each answer is
appended to the output as its batch finishes: the file's order is not the input's. A batched
answer equals the one-at-a-time answer except, rarely, where the two likeliest tokens are so
close that the batch's different rounding flips them (--batch-size 1 for bit-exact answers).
Run the same command again after an interruption and it answers only the prompts whose ids are
not in the output yet (keep --model and --max-new-tokens the same). On 2 CPU cores SmolLM2-135M
answers 200 short Spec-Bench questions at 64 tokens in a few minutes.

examples:
  sam-decoding distill questions.jsonl -o answers.jsonl --limit 100
  sam-decoding distill prompts.jsonl --prompt-field instruction --max-new-tokens 512 -o answers.jsonl
  sam-decoding build answers.jsonl -o answers.sam"""


def register(commands: Any) -> None:
    """Add the ``distill`` subcommand to ``commands``."""
    parser = commands.add_parser(
        "distill",
        help="answer prompts with the model's greedy decoding into a chat corpus for 'build'",
        description="Generate the model's own greedy answers to the prompts of a JSONL file and "
        "write them as chat JSONL, the corpus the SAM-Decoding paper builds its static automaton from.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompts", type=Path, metavar="PROMPTS", help="JSONL file, one prompt a line")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="FILE", help="chat JSONL to write")
    parser.add_argument(
        "--prompt-field",
        metavar="NAME",
        help="field holding the prompt (default: the first of Spec-Bench's 'turns', or 'prompt')",
    )
    parser.add_argument("--model", metavar="MODEL", help="local model directory or hub id (default: SmolLM2-135M-Instruct)")
    add_placement_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="answer length cap in tokens (default: %(default)s)")
    parser.add_argument("--limit", type=int, metavar="N", help="answer only the first N prompts")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N", help="prompts per batched generate call (default: %(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Distill the answers the output does not hold yet and append them. Returns the exit code."""
    from tqdm import tqdm

    from sam_decoding.distillation import append_jsonl, distill, read_prompts, resume_distill_output, select_prompts

    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1")
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    if not args.prompts.is_file():
        raise CliError(f"{args.prompts}: no such file")
    if args.output.is_dir() or not args.output.resolve().parent.is_dir():
        raise CliError(f"{args.output}: not a writable file path (does its directory exist?)")
    chosen = select_prompts(read_prompts(args.prompts, args.prompt_field), (), args.limit)
    done = resume_distill_output(args.output)
    prompts = select_prompts(chosen, done, None)
    if len(prompts) < len(chosen):
        print(f"resuming {args.output}: {len(chosen) - len(prompts)} of {len(chosen)} prompts already answered", file=sys.stderr)
    if not prompts:
        print(f"{args.output}: all {len(chosen)} prompts already answered")
        return 0
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
    started = time.perf_counter()
    progress = tqdm(total=len(prompts), unit=" answers", file=sys.stderr, disable=True if args.no_progress else None)
    with progress:
        count = append_jsonl(
            distill(
                model,
                tokenizer,
                prompts,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
                on_answer=lambda prompt, answer: progress.update(1),
                on_step=lambda step: progress.set_postfix_str(f"batch at token {step}/{args.max_new_tokens}", refresh=False),
            ),
            args.output,
        )
    print(f"wrote {count} conversations to {args.output} in {time.perf_counter() - started:.1f} s")
    return 0
