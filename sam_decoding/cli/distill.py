"""``sam-decoding distill``: answer prompts with the model's own greedy decoding into a chat corpus."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from sam_decoding.cli.errors import CliError
from sam_decoding.cli.loading import load_model_and_tokenizer

_EPILOG = """\
The output is chat JSONL ({"id", "messages": [user, assistant]} per line), ready for 'build'.
Answers come from plain greedy decoding, so they are the text the model itself tends to write.

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
    parser.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="answer length cap in tokens (default: %(default)s)")
    parser.add_argument("--limit", type=int, metavar="N", help="answer only the first N prompts")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Distill the answers and write them. Returns the exit code."""
    from tqdm import tqdm

    from sam_decoding.distillation import distill, read_prompts, select_prompts, write_jsonl_atomically

    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1")
    if not args.prompts.is_file():
        raise CliError(f"{args.prompts}: no such file")
    if args.output.is_dir() or not args.output.resolve().parent.is_dir():
        raise CliError(f"{args.output}: not a writable file path (does its directory exist?)")
    prompts = select_prompts(read_prompts(args.prompts, args.prompt_field), (), args.limit)
    model, tokenizer = load_model_and_tokenizer(args.model)
    started = time.perf_counter()
    progress = tqdm(
        total=len(prompts), unit=" prompts", file=sys.stderr, disable=True if args.no_progress else None
    )
    with progress:
        count = write_jsonl_atomically(
            distill(
                model,
                tokenizer,
                prompts,
                max_new_tokens=args.max_new_tokens,
                on_answer=lambda prompt, answer: progress.update(1),
            ),
            args.output,
        )
    print(f"wrote {args.output}: {count} conversations in {time.perf_counter() - started:.1f} s")
    return 0
