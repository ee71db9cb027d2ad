"""``sam-decoding generate``: answer one prompt, drafting from a corpus automaton and the request's own text."""

from __future__ import annotations

import argparse
import json
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
with a fallback drafter (Token Recycling by default) when neither matches. With
--response-cache FILE, earlier answers kept in FILE draft too, and this answer is added to FILE
(created if missing; the oldest answers are dropped beyond --response-cache-tokens; the file is
replaced only after a successful run, and a damaged or foreign file is refused, not overwritten).
Decoding options the flags leave unset come from the model's generation_config, as with
model.generate (e.g. its temperature, top_p or repetition_penalty when sampling).

--json prints one JSON object on stdout and nothing else there: "text" (the answer), "new_token_ids",
"prompt_tokens", "model", "speculation" and "stats" (every counter and timing of the call:
new_tokens, steps, mean_accepted_tokens, tokens_per_second, accepted_by_source, *_seconds, ...),
and with --response-cache "response_cache" (its path, answers and tokens after this one).

examples:
  sam-decoding generate --chat 'Write a haiku about autumn.'
  sam-decoding generate --corpus docs.sam --chat 'How do I install the package?' --stream
  sam-decoding generate --response-cache answers.cache --chat 'How do I install the package?'
  sam-decoding generate --model ./my-llama --prompt 'def fibonacci(n):' --max-new-tokens 64
  sam-decoding generate --chat-file question.txt --system 'Answer in one sentence.' --json
  git diff | sam-decoding generate --chat-file - --system 'Review this patch.' --dtype bfloat16
  sam-decoding generate --chat 'Tell me a story.' --do-sample --temperature 0.7 --top-p 0.9 --seed 1
  sam-decoding generate --chat 'Count to 20.' --fallback prompt-lookup --no-tree --max-draft 8 --policy all
  sam-decoding generate --chat 'Tell me a story.' --no-speculation"""

FALLBACKS = ("token-recycling", "prompt-lookup", "none")


def register(commands: Any) -> None:
    """Add the ``generate`` subcommand to ``commands``."""
    from sam_decoding.cli.loading import add_placement_arguments

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
    text.add_argument("--prompt-file", metavar="PATH", help="raw text to continue, read from a UTF-8 file ('-': stdin), verbatim")
    text.add_argument("--chat-file", metavar="PATH", help="a user message read from a UTF-8 file ('-': stdin), outer whitespace stripped")
    parser.add_argument("--system", metavar="TEXT", help="a system message before the user message (with --chat or --chat-file)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", metavar="MODEL", help="local Hugging Face model directory or hub id (default: SmolLM2-135M-Instruct)")
    add_placement_arguments(model)

    decoding = parser.add_argument_group("decoding (unset options come from the model's generation_config)")
    decoding.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="most tokens to generate (default: %(default)s)")
    decoding.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    decoding.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (> 0)")
    decoding.add_argument("--top-k", type=int, metavar="K", help="sample from the K most likely tokens (0: no limit; transformers' default 50)")
    decoding.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling mass, in (0, 1]")
    decoding.add_argument("--min-p", type=float, metavar="P", help="drop tokens below P times the top probability, in [0, 1]")
    decoding.add_argument("--repetition-penalty", type=float, metavar="X", help="divide the scores of tokens already present by X (> 0)")
    decoding.add_argument("--seed", type=int, help="random seed for sampling")

    drafting = parser.add_argument_group("drafting")
    drafting.add_argument("--corpus", type=Path, metavar="FILE", help="static corpus automaton built by 'build'")
    # The defaults are SamDrafter's (named in the help, not imported: that would load torch for --help).
    drafting.add_argument("--min-probability", type=float, metavar="P",
                          help="draft only nodes whose estimated chance of acceptance, along their whole path, is at least P (default: 0.1)")
    drafting.add_argument("--max-draft", type=int, metavar="N", help="longest retrieval draft, in tokens (default: 40)")
    drafting.add_argument("--no-tree", action="store_true", help="draft a single chain from the corpus instead of a tree")
    drafting.add_argument("--fallback", choices=FALLBACKS, default=None,
                          help="drafter when neither automaton matches (default: none on a CPU, token-recycling on a GPU, "
                               "which measured fastest on each)")
    drafting.add_argument("--no-fallback", action="store_true", help="same as --fallback none")
    drafting.add_argument("--response-cache", type=Path, metavar="FILE",
                          help="draft also from earlier answers kept in FILE, and add this answer to it (created if missing)")
    drafting.add_argument("--response-cache-tokens", type=int, metavar="N",
                          help="most tokens the response cache keeps, the oldest answers dropped first (default: 1000000)")
    drafting.add_argument("--policy", choices=("cost", "all"), default=None,
                          help="cost: verify the drafted nodes that pay on this hardware (default); all: verify every drafted node")
    drafting.add_argument("--no-policy", action="store_true", help=argparse.SUPPRESS)  # the old --policy all
    drafting.add_argument("--no-speculation", action="store_true", help="plain decoding with the model's own generate (for comparison)")

    output = parser.add_argument_group("output")
    output.add_argument("--stream", action="store_true", help="print tokens as they are accepted")
    output.add_argument("--json", action="store_true", help="print one JSON object (text, token ids, stats) on stdout instead")
    parser.set_defaults(handler=run)


#: Drafting flags by their attribute names; none has a use with --no-speculation.
_DRAFT_FLAGS = ("corpus", "min_probability", "max_draft", "no_tree", "fallback", "no_fallback", "policy", "no_policy",
                "response_cache", "response_cache_tokens")
DEFAULT_RESPONSE_CACHE_TOKENS = 1_000_000


def _check_arguments(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    if args.temperature is not None and not args.temperature > 0:
        raise CliError("--temperature must be positive")
    if args.top_k is not None and args.top_k < 0:
        raise CliError("--top-k must be at least 0 (0: no limit)")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise CliError("--top-p must lie in (0, 1]")
    if args.min_p is not None and not 0 <= args.min_p <= 1:
        raise CliError("--min-p must lie in [0, 1]")
    if args.repetition_penalty is not None and not args.repetition_penalty > 0:
        raise CliError("--repetition-penalty must be positive")
    if args.min_probability is not None and not 0.0 <= args.min_probability <= 1.0:
        raise CliError("--min-probability must be in [0, 1]")
    if args.max_draft is not None and args.max_draft < 1:
        raise CliError("--max-draft must be at least 1")
    if args.response_cache_tokens is not None and args.response_cache_tokens < 1:
        raise CliError("--response-cache-tokens must be at least 1")
    if args.response_cache_tokens is not None and args.response_cache is None:
        raise CliError("--response-cache-tokens needs --response-cache")
    if args.no_policy:
        print("sam-decoding: --no-policy is renamed --policy all; the old flag will be removed in the next release", file=sys.stderr)
        if args.policy == "cost":
            raise CliError("--no-policy contradicts --policy cost")
        args.policy = "all"
    if args.no_fallback and args.fallback not in (None, "none"):
        raise CliError(f"--no-fallback contradicts --fallback {args.fallback}")
    if args.system is not None and args.chat is None and args.chat_file is None:
        raise CliError("--system needs --chat or --chat-file (a raw prompt has no chat template)")
    if args.stream and args.json:
        raise CliError("--stream and --json both write to stdout; choose one")
    if args.no_speculation:
        given = [name for name in _DRAFT_FLAGS if getattr(args, name) not in (None, False)]
        if given:
            raise CliError(f"--{given[0].replace('_', '-')} has no use with --no-speculation")


def read_text_argument(path: str, flag: str) -> str:
    """The UTF-8 text of ``path`` (``-``: all of stdin), or a :class:`CliError` saying why it cannot be read."""
    if path == "-":
        try:
            return sys.stdin.read()
        except UnicodeDecodeError:
            raise CliError(f"{flag} -: stdin is not UTF-8 text") from None
    file = Path(path)
    if not file.exists():
        raise CliError(f"{flag} {path}: no such file")
    if file.is_dir():
        raise CliError(f"{flag} {path}: is a directory, not a text file")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{flag} {path}: not UTF-8 text") from None


def prompt_ids(args: argparse.Namespace, tokenizer: Any) -> Any:
    """The prompt's token ids ``[1, length]`` from whichever of --prompt, --chat, --prompt-file, --chat-file was given."""
    from sam_decoding.prompts import chat_prompt_ids, raw_prompt_ids

    if args.prompt_file is not None:
        text, chat = read_text_argument(args.prompt_file, "--prompt-file"), False
    elif args.chat_file is not None:
        text, chat = read_text_argument(args.chat_file, "--chat-file").strip(), True
    else:
        text, chat = (args.chat, True) if args.chat is not None else (args.prompt, False)
    if not text:
        raise CliError("the prompt is empty")
    try:
        return chat_prompt_ids(tokenizer, text, system=args.system) if chat else raw_prompt_ids(tokenizer, text)
    except ValueError as error:
        raise CliError(str(error)) from None


def decoding_options(args: argparse.Namespace) -> dict[str, Any]:
    """The generate keyword arguments the flags set; the model's generation_config supplies the rest."""
    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    names = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
    options.update({name: getattr(args, name) for name in names if getattr(args, name) is not None})
    return options


def check_response_cache_file(path: Path) -> None:
    """Refuse, before the model loads, a --response-cache file that cannot be read (a missing one is created later)."""
    from sam_decoding.response_cache import read_response_cache

    if path.is_dir():
        raise CliError(f"--response-cache {path}: is a directory, not a file")
    if not path.parent.is_dir():
        raise CliError(f"--response-cache {path}: directory {path.parent} does not exist")
    if path.exists():
        try:
            read_response_cache(path)
        except (ValueError, OSError) as error:  # FormatError: truncated, corrupted, foreign, newer
            raise CliError(f"--response-cache {error}") from None


def open_response_cache(args: argparse.Namespace, tokenizer: Any) -> Any:
    """The --response-cache file as a ResponseCache of the model's tokenizer (empty if the file does not exist yet)."""
    from sam_decoding.models import tokenizer_fingerprint
    from sam_decoding.response_cache import ResponseCache

    max_tokens = args.response_cache_tokens or DEFAULT_RESPONSE_CACHE_TOKENS
    try:
        return ResponseCache(max_tokens, args.response_cache, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer))
    except (ValueError, OSError) as error:  # TokenizerMismatchError names both tokenizers
        raise CliError(f"--response-cache {error}") from None


def save_response_cache(cache: Any) -> str:
    """Save the cache (atomically) and describe it for the stats line."""
    try:
        cache.save()
    except OSError as error:
        raise CliError(f"--response-cache {cache.path}: could not save: {error}") from None
    answers = "answer" if cache.num_responses == 1 else "answers"
    return f"; response cache: {cache.num_responses} {answers}, {cache.num_tokens} tokens, saved to {cache.path}"


def default_fallback(device: Any) -> str:
    """The fallback drafter that measured fastest on the device: Token Recycling on a GPU, none on a CPU."""
    import torch

    return "token-recycling" if device is not None and torch.device(device).type == "cuda" else "none"


def make_drafter(args: argparse.Namespace, corpus: Any, responses: Any = None, device: Any = None) -> Any:
    """The SamDrafter the drafting flags describe (``responses``: a ResponseCache to draft from and record
    into; ``device``: where the model runs, which picks the default fallback)."""
    from sam_decoding.drafters import PromptLookupDrafter, SamDrafter, TokenRecyclingDrafter

    choice = "none" if args.no_fallback else (args.fallback or default_fallback(device))
    fallback = {"token-recycling": TokenRecyclingDrafter, "prompt-lookup": PromptLookupDrafter}.get(choice)
    settings = {"min_probability": args.min_probability, "max_draft": args.max_draft}
    return SamDrafter(
        corpus,
        fallback=fallback() if fallback is not None else None,
        use_tree=not args.no_tree,
        response_cache=responses,
        **{name: value for name, value in settings.items() if value is not None},
    )


def draft_shares(stats: Any) -> str:
    """Which share of the new tokens each draft source supplied, the rest being the model's own."""
    total = max(stats.new_tokens, 1)
    parts = [f"{source} {100 * count / total:.0f}%" for source, count in sorted(stats.accepted_by_source.items()) if count]
    own = stats.new_tokens - sum(stats.accepted_by_source.values())
    parts.append(f"model {100 * own / total:.0f}%")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Generate and print the answer, then the stats line (or one JSON object with --json). Returns the exit code."""
    _check_arguments(args)
    import torch
    from transformers import TextStreamer

    from sam_decoding.cli.loading import resolve_placement
    from sam_decoding.generation import generate
    from sam_decoding.prompts import eos_token_ids

    resolve_placement(args.device, args.dtype)  # a bad device fails before the model loads, as does a bad corpus
    if args.corpus is not None:
        open_corpus(args.corpus)
    if args.response_cache is not None:
        check_response_cache_file(args.response_cache)
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
    corpus = open_corpus_for_tokenizer(args.corpus, tokenizer) if args.corpus is not None else None
    responses = open_response_cache(args, tokenizer) if args.response_cache is not None else None
    input_ids = prompt_ids(args, tokenizer).to(next(model.parameters()).device)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if args.stream else None
    eos = eos_token_ids(model, tokenizer)
    options = decoding_options(args)

    started = time.perf_counter()
    cache_info = None
    if args.no_speculation:
        with torch.inference_mode():
            sequences = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                eos_token_id=eos or None,
                pad_token_id=(eos or [0])[0],
                streamer=streamer,
                **options,
            )
        seconds = time.perf_counter() - started
        new_tokens = sequences[0, input_ids.shape[1] :].cpu()
        stats = {"new_tokens": len(new_tokens), "total_seconds": seconds, "tokens_per_second": len(new_tokens) / seconds}
        summary = f"{len(new_tokens)} tokens in {seconds:.2f} s ({len(new_tokens) / seconds:.1f} tokens/s), plain decoding"
    else:
        generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
        result = generate(
            model,
            input_ids,
            drafter=make_drafter(args, corpus, responses, input_ids.device),
            policy=args.policy or "cost",
            eos_token_id=eos,
            generator=generator,
            streamer=streamer,
            **options,
        )
        seconds = time.perf_counter() - started
        new_tokens = result.new_tokens.cpu()
        stats = result.stats.as_dict()
        summary = (
            f"{result.stats.new_tokens} tokens in {seconds:.2f} s ({result.stats.new_tokens / seconds:.1f} tokens/s), "
            f"{result.stats.steps} steps, MAT {result.stats.mean_accepted_tokens:.2f}; tokens from: {draft_shares(result.stats)}"
        )
        if responses is not None:  # the drafter recorded the answer when the request finished
            summary += save_response_cache(responses)
            cache_info = {"path": str(responses.path), "responses": responses.num_responses,
                          "tokens": responses.num_tokens}
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    extra = {"response_cache": cache_info} if cache_info is not None else {}
    print_answer(args, text, new_tokens.tolist(), int(input_ids.shape[1]), stats, summary, streamed=streamer is not None, extra=extra)
    return 0


def print_answer(args: argparse.Namespace, text: str, new_token_ids: list[int], prompt_tokens: int, stats: dict[str, Any],
                 summary: str, *, streamed: bool, extra: dict[str, Any]) -> None:
    """The answer on stdout and the stats line on stderr, or with --json one JSON object on stdout."""
    if args.json:
        record = {
            "text": text,
            "new_token_ids": new_token_ids,
            "prompt_tokens": prompt_tokens,
            "model": args.model or "SmolLM2-135M-Instruct",
            "speculation": not args.no_speculation,
            "stats": stats,
            **extra,
        }
        print(json.dumps(record, ensure_ascii=False))
        return
    if not streamed:
        print(text)
    sys.stdout.flush()
    print(summary, file=sys.stderr)
