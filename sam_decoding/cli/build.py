"""``sam-decoding build``: tokenize text, code or chat files into a static corpus automaton file."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sam_decoding.cli.errors import CliError
from sam_decoding.cli.loading import load_tokenizer_only
from sam_decoding.corpus import ReadOptions, ReadTally, read_documents, tokenize_documents

_EPILOG = """\
input kinds (one or more, mixed freely):
  FILE.txt, FILE.md, ...   one document per file (UTF-8 text)
  DIR                      every file under DIR matching --glob (binary files are skipped)
  FILE.jsonl[.gz]          one document per line: the --text-field string, or the --chat-field
                           message list, or (auto) a list of {role, content} messages or a "text" field
chats are rendered with the tokenizer's chat template, as the model sees them.

examples:
  sam-decoding build notes.md manual.txt -o notes.sam
  sam-decoding build ~/src/project --glob '**/*.py' --exclude 'tests/*' -o project.sam
  sam-decoding build articles.jsonl --text-field body -o articles.sam
  sam-decoding build chats.jsonl --chat-field messages --model ./my-model -o chats.sam
  sam-decoding build ~/src/project --glob '**/*.py' --model ./qwen2.5-coder-q4_k_m.gguf -o code.sam
      (a GGUF file: tokenized with the file's own vocabulary, for llama.cpp users)
without --model, the default model's tokenizer (SmolLM2-135M-Instruct) is used and a notice says so:
a corpus drafts only for models with the tokenizer it was built with.  sam-decoding build ~/corpus --shard-tokens 50000000 --jobs 2 -o corpus-shards/
      (a sharded corpus: a directory of shards of at most 50M tokens each, built two at a time,
       and its manifest.json; 'info' and 'generate --corpus' take the directory)"""


def register(commands: Any) -> None:
    """Add the ``build`` subcommand to ``commands``."""
    parser = commands.add_parser(
        "build",
        help="build a static corpus automaton from text, code or chat files",
        description="Tokenize the inputs (each file, JSONL line or chat a separate document) "
        "and write a static suffix automaton over them, for drafting at generation time.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories to read")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="PATH",
        help="corpus file to write (with --shard-tokens: a new or empty directory)",
    )
    parser.add_argument(
        "--shard-tokens",
        type=_positive_int,
        metavar="N",
        help="write a sharded corpus: shards of at most N tokens each, split between documents "
        "(only one shard's tokens are held in memory)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="with --shard-tokens, build up to N shards at once in worker processes (default: 1)",
    )
    parser.add_argument(
        "--glob", default="**/*", help="files to take inside directories (default: %(default)s)"
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files whose path relative to the directory matches GLOB (repeatable)",
    )
    fields = parser.add_mutually_exclusive_group()
    fields.add_argument("--text-field", metavar="NAME", help="JSONL field holding a text string")
    fields.add_argument(
        "--chat-field", metavar="NAME", help="JSONL field holding a list of {role, content} messages"
    )
    parser.add_argument(
        "--model",
        "--tokenizer",
        dest="tokenizer",
        metavar="MODEL",
        help="the model the corpus will draft for: a local model/tokenizer directory, a hub id, or a .gguf "
        "file (its own vocabulary); --tokenizer is the older name (default: the default model, "
        "SmolLM2-135M-Instruct, with a notice)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _check_paths(inputs: list[str], output: Path, sharded: bool) -> None:
    for raw in inputs:
        if not Path(raw).exists():
            raise CliError(f"{raw}: no such file or directory")
    if sharded:
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise CliError(f"{output}: must be a new or empty directory for a sharded corpus")
        if not output.parent.is_dir():
            raise CliError(f"{output.parent}: output directory does not exist")
        return
    if output.is_dir():
        raise CliError(f"{output}: is a directory; give a file name with -o")
    if not output.parent.is_dir():
        raise CliError(f"{output.parent}: output directory does not exist")


def run(args: argparse.Namespace) -> int:
    """Build and save the automaton; print a summary line. Returns the exit code."""
    sharded = args.shard_tokens is not None
    if args.jobs > 1 and not sharded:
        raise CliError("--jobs needs --shard-tokens (a single file is built in one process)")
    _check_paths(args.inputs, args.output, sharded)
    options = ReadOptions(
        glob=args.glob,
        exclude=tuple(args.exclude),
        text_field=args.text_field,
        chat_field=args.chat_field,
    )
    from tqdm import tqdm

    from sam_decoding import StaticAutomaton
    from sam_decoding.models import tokenizer_fingerprint

    if args.tokenizer is not None and args.tokenizer.lower().endswith(".gguf"):
        tokenizer, fingerprint = _gguf_tokenizer(Path(args.tokenizer).expanduser())
    else:
        tokenizer = load_tokenizer_only(args.tokenizer)
        fingerprint = tokenizer_fingerprint(tokenizer)

    if sharded:
        return _build_sharded(args, options, tokenizer, fingerprint)

    tally = ReadTally()
    started = time.perf_counter()
    documents = []
    progress = tqdm(
        desc="tokenizing",
        unit=" docs",
        file=sys.stderr,
        disable=True if args.no_progress else None,
        dynamic_ncols=True,
    )
    with progress:
        for tokens in tokenize_documents(
            read_documents(args.inputs, options, tally), tokenizer, tally=tally
        ):
            documents.append(tokens)
            progress.update(1)
            if progress.n % 64 == 0:
                rate = sum(map(len, documents)) / max(time.perf_counter() - started, 1e-9)
                progress.set_postfix_str(f"{rate:,.0f} tokens/s", refresh=False)
    num_tokens = sum(map(len, documents))
    tokenize_seconds = time.perf_counter() - started
    if not documents:
        raise CliError("the inputs hold no text to build a corpus from")

    metadata = _build_parameters(args, tally, len(documents), num_tokens)
    if not args.no_progress:
        print(f"building the automaton over {num_tokens:,} tokens...", file=sys.stderr)
    started = time.perf_counter()
    automaton = StaticAutomaton.build(
        documents, tokenizer_fingerprint=fingerprint, metadata=metadata
    )
    build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    automaton.save(args.output)
    save_seconds = time.perf_counter() - started

    file_bytes = args.output.stat().st_size
    skipped = f", {len(tally.skipped_files)} binary/undecodable files skipped" if tally.skipped_files else ""
    print(
        f"wrote {args.output}: {automaton.num_tokens:,} tokens in {automaton.num_documents:,} documents"
        f"{skipped}, {automaton.num_states:,} states, {file_bytes:,} bytes "
        f"({file_bytes / max(automaton.num_tokens, 1):.1f} bytes/token); "
        f"{tokenize_seconds:.1f} s tokenizing ({num_tokens / max(tokenize_seconds, 1e-9):,.0f} tokens/s), "
        f"{build_seconds:.1f} s building, {save_seconds:.1f} s saving"
        + ("; tokenized for the default model, SmolLM2-135M-Instruct (pass --model for another)" if args.tokenizer is None else "")
    )
    return 0


def _gguf_tokenizer(path: Path) -> tuple[Any, str]:
    """The tokenizer of a GGUF file (transformers' GGUF loader) and the fingerprint of the file's own vocabulary.

    The fingerprint is computed from the file's ``tokenizer.ggml.tokens``, which is what
    :func:`sam_decoding.llama_cpp.tokenizer_fingerprint` computes for the loaded model; the
    transformers tokenizer must map the same ids to the same tokens, or the build stops.
    """
    from sam_decoding.cli.loading import quiet_transformers
    from sam_decoding.gguf_vocabulary import VocabularyError, first_difference, gguf_tokens, hf_tokens, vocabulary_fingerprint

    if not path.is_file():
        raise CliError(f"model {path}: no such GGUF file")
    try:
        tokens = gguf_tokens(path)
    except VocabularyError as error:
        raise CliError(str(error)) from None
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, KeyError, NotImplementedError) as error:
        raise CliError(f"model {path}: transformers cannot load this GGUF file's tokenizer ({error})") from None
    try:
        difference = first_difference(tokens, hf_tokens(tokenizer))
    except VocabularyError as error:
        difference = str(error)
    if difference is not None:
        raise CliError(f"model {path}: the GGUF vocabulary and transformers' reading of it differ ({difference})")
    return tokenizer, vocabulary_fingerprint(tokens)


def _build_parameters(args: argparse.Namespace, tally: ReadTally, documents: int, tokens: int) -> dict[str, Any]:
    """The build parameters stored in the corpus (file metadata or shard manifest)."""
    from sam_decoding.models import DEFAULT_MODEL

    return {
        "inputs": [str(Path(raw).resolve()) for raw in args.inputs],
        "glob": args.glob,
        "exclude": list(args.exclude),
        "text_field": args.text_field,
        "chat_field": args.chat_field,
        "tokenizer": args.tokenizer or DEFAULT_MODEL,
        "files": tally.files,
        "skipped_files": len(tally.skipped_files),
        "documents": documents,
        "chat_documents": tally.chat_documents,
        "tokens": tokens,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _build_sharded(args: argparse.Namespace, options: ReadOptions, tokenizer: Any, fingerprint: str) -> int:
    """Tokenize the inputs straight into shards (one shard's tokens in memory), building up to
    ``--jobs`` shards at once, then write the manifest; print a summary line."""
    from tqdm import tqdm

    from sam_decoding.shards import ShardedAutomaton, ShardWriter

    tally = ReadTally()
    started = time.perf_counter()
    progress = tqdm(desc="tokenizing", unit=" docs", file=sys.stderr,
                    disable=True if args.no_progress else None, dynamic_ncols=True)
    documents = 0
    with progress, ShardWriter(args.output, shard_tokens=args.shard_tokens, jobs=args.jobs,
                               tokenizer_fingerprint=fingerprint) as writer:
        for tokens in tokenize_documents(read_documents(args.inputs, options, tally), tokenizer, tally=tally):
            writer.add(tokens)
            documents += 1
            progress.update(1)
        if not documents:
            raise CliError("the inputs hold no text to build a corpus from")
        writer.metadata.update(_build_parameters(args, tally, documents, tally.tokens))
    seconds = time.perf_counter() - started
    corpus = ShardedAutomaton.load(args.output)
    skipped = f", {len(tally.skipped_files)} binary/undecodable files skipped" if tally.skipped_files else ""
    print(
        f"wrote {args.output}/: {corpus.num_tokens:,} tokens in {corpus.num_documents:,} documents{skipped}, "
        f"{corpus.num_shards} shards, {corpus.num_states:,} states, {corpus.nbytes:,} bytes "
        f"({corpus.nbytes / max(corpus.num_tokens, 1):.1f} bytes/token); {seconds:.1f} s tokenizing and "
        f"building with {args.jobs} job(s) ({corpus.num_tokens / max(seconds, 1e-9):,.0f} tokens/s)"
    )
    return 0
