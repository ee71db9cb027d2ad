"""A corpus too large for one file: build it as shards, grow it by a shard, and draft from all of them.

    python examples/sharded_corpus.py [FOLDER] [--shard-tokens N] [--max-new-tokens N]

Shards split between documents, so a ShardedAutomaton answers exactly as one automaton over all the
documents would. The same from the command line:
    sam-decoding build FOLDER -o corpus/ --shard-tokens 50000000 --jobs 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import sam_decoding as sd
from sam_decoding.corpus import ReadOptions, read_documents, tokenize_documents
from sam_decoding.models import load_model, load_tokenizer, tokenizer_fingerprint
from sam_decoding.shards import add_shard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=Path(sd.__file__).parent)
    parser.add_argument("--shard-tokens", type=int, default=50_000, help="at most this many tokens a shard")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    tokenizer, model = load_tokenizer(), load_model()
    fingerprint = tokenizer_fingerprint(tokenizer)
    documents = tokenize_documents(read_documents([args.folder], ReadOptions(glob="**/*.py")), tokenizer)

    with tempfile.TemporaryDirectory() as directory:
        corpus_dir = Path(directory) / "corpus"
        sd.ShardedAutomaton.build(documents, corpus_dir, shard_tokens=args.shard_tokens,
                                  tokenizer_fingerprint=fingerprint)
        # A corpus grows by a shard built over the new documents; the manifest is rewritten atomically.
        notes = [tokenizer("def greet(name):\n    return f'Hello, {name}!'\n")["input_ids"]]
        add_shard(corpus_dir, sd.StaticAutomaton.build(notes, tokenizer_fingerprint=fingerprint))

        corpus = sd.load_corpus(corpus_dir)  # a directory: the manifest and every shard, memory-mapped
        print(f"corpus: {corpus.num_shards} shards, {corpus.num_tokens:,} tokens")
        drafter = sd.SamDrafter(corpus, tokenizer_fingerprint=fingerprint)
        messages = [{"role": "user", "content": "Write a Python function greet(name) that returns a greeting."}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)["input_ids"]
        result = sd.generate(model, prompt, drafter=drafter, max_new_tokens=args.max_new_tokens)

    print(tokenizer.decode(result.new_tokens))
    print(f"{len(result.new_tokens)} tokens, {result.stats.mean_accepted_tokens:.2f} per forward pass")


if __name__ == "__main__":
    main()
