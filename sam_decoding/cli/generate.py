"""``sam-decoding generate``: answer one prompt, drafting from a corpus automaton and the request's own text."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from sam_decoding.cli.errors import CliError
from sam_decoding.cli.loading import load_model_and_tokenizer, open_corpus, open_corpus_for_tokenizer

_EPILOG = """\
The output is exactly what the model alone would write (greedy: token for token; sampling: the
same distribution); the drafts only decide how many tokens each forward pass verifies.
Drafting: the static corpus automaton (--corpus) and a dynamic one over prompt + answer,
with Token Recycling as the fallback when neither matches.

examples:
  sam-decoding generate --chat 'Write a haiku about autumn.'
  sam-decoding generate --corpus docs.sam --chat 'How do I install the package?' --stream
  sam-decoding generate --model ./my-llama --prompt 'def fibonacci(n):' --max-new-tokens 64
  sam-decoding generate --chat 'Tell me a story.' --do-sample --temperature 0.7 --top-p 0.9 --seed 1
  sam-decoding generate --chat 'Tell me a story.' --no-speculation"""


def register(commands: Any) -> None:
    """Add the ``generate`` subcommand to ``commands``."""
    parser = commands.add_parser(
        "generate",
        help="generate an answer with lossless speculative decoding",
        description="Generate text for one prompt with SAM-Decoding and print it, followed by a "
        "stats line on stderr (tokens/s, mean accepted tokens per step, share of tokens per draft source).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--prompt", metavar="TEXT", help="raw text to continue")
    text.add_argument("--chat", metavar="TEXT", help="a user message, rendered with the chat template")
    parser.add_argument("--model", metavar="MODEL", help="local model directory or hub id (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--corpus", type=Path, metavar="FILE", help="static corpus automaton built by 'build'")
    parser.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="most tokens to generate (default: %(default)s)")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    parser.add_argument("--top-k", type=int, metavar="K", help="sample from the K most likely tokens")
    parser.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, help="random seed for sampling")
    parser.add_argument("--stream", action="store_true", help="print tokens as they are accepted")
    parser.add_argument("--no-speculation", action="store_true", help="plain decoding with the model's own generate (for comparison)")
    parser.add_argument("--no-fallback", action="store_true", help="no Token Recycling drafts when the automata do not match")
    parser.set_defaults(handler=run)


def _check_arguments(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    if args.do_sample and not args.temperature > 0:
        raise CliError("--temperature must be positive")
    if args.top_k is not None and args.top_k < 1:
        raise CliError("--top-k must be at least 1")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise CliError("--top-p must lie in (0, 1]")
    if args.corpus is not None and args.no_speculation:
        raise CliError("--corpus has no use with --no-speculation")


def draft_shares(stats: Any) -> str:
    """Which share of the new tokens each draft source supplied, the rest being the model's own."""
    total = max(stats.new_tokens, 1)
    parts = [f"{source} {100 * count / total:.0f}%" for source, count in sorted(stats.accepted_by_source.items()) if count]
    own = stats.new_tokens - sum(stats.accepted_by_source.values())
    parts.append(f"model {100 * own / total:.0f}%")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Generate and print the answer, then the stats line. Returns the exit code."""
    _check_arguments(args)
    import torch
    from transformers import TextStreamer

    from sam_decoding.drafters import SamDrafter, TokenRecyclingDrafter
    from sam_decoding.generation import generate
    from sam_decoding.prompts import chat_prompt_ids, eos_token_ids, raw_prompt_ids

    if args.corpus is not None:
        open_corpus(args.corpus)  # a bad corpus file fails before the model loads
    model, tokenizer = load_model_and_tokenizer(args.model)
    corpus = open_corpus_for_tokenizer(args.corpus, tokenizer) if args.corpus is not None else None
    try:
        input_ids = chat_prompt_ids(tokenizer, args.chat) if args.chat is not None else raw_prompt_ids(tokenizer, args.prompt)
    except ValueError as error:
        raise CliError(str(error)) from None
    if args.seed is not None:
        torch.manual_seed(args.seed)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if args.stream else None
    eos = eos_token_ids(model, tokenizer)
    sampling = {"do_sample": args.do_sample}
    if args.do_sample:
        sampling.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)

    started = time.perf_counter()
    if args.no_speculation:
        with torch.inference_mode():
            sequences = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=args.max_new_tokens,
                eos_token_id=eos or None,
                pad_token_id=(eos or [0])[0],
                streamer=streamer,
                **sampling,
            )
        seconds = time.perf_counter() - started
        new_tokens = sequences[0, input_ids.shape[1] :]
        summary = f"{len(new_tokens)} tokens in {seconds:.2f} s ({len(new_tokens) / seconds:.1f} tokens/s), plain decoding"
    else:
        drafter = SamDrafter(corpus, fallback=None if args.no_fallback else TokenRecyclingDrafter())
        generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
        result = generate(
            model,
            input_ids,
            drafter=drafter,
            max_new_tokens=args.max_new_tokens,
            eos_token_id=eos,
            generator=generator,
            streamer=streamer,
            **sampling,
        )
        seconds = time.perf_counter() - started
        new_tokens = result.new_tokens
        stats = result.stats
        summary = (
            f"{stats.new_tokens} tokens in {seconds:.2f} s ({stats.new_tokens / seconds:.1f} tokens/s), "
            f"{stats.steps} steps, MAT {stats.mean_accepted_tokens:.2f}; tokens from: {draft_shares(stats)}"
        )
    if streamer is None:
        print(tokenizer.decode(new_tokens, skip_special_tokens=True))
    sys.stdout.flush()
    print(summary, file=sys.stderr)
    return 0
