"""Build a corpus from a folder of code, save it, and generate with it as the draft source.

    python examples/corpus_from_folder.py [FOLDER] [--glob '**/*.py'] [--max-new-tokens N]

FOLDER defaults to the installed sam_decoding package's own sources, so the script runs anywhere.
The same from the command line: sam-decoding build FOLDER --glob '**/*.py' -o code.sam
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import sam_decoding as sd
from sam_decoding.corpus import ReadOptions, read_documents, tokenize_documents
from sam_decoding.models import load_model, load_tokenizer, tokenizer_fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=Path(sd.__file__).parent)
    parser.add_argument("--glob", default="**/*.py", help="which files of FOLDER to read")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    tokenizer, model = load_tokenizer(), load_model()  # SmolLM2-135M-Instruct
    fingerprint = tokenizer_fingerprint(tokenizer)  # saved in the file; another tokenizer is refused
    documents = tokenize_documents(read_documents([args.folder], ReadOptions(glob=args.glob)), tokenizer)
    corpus = sd.StaticAutomaton.build(documents, tokenizer_fingerprint=fingerprint)
    print(f"corpus: {corpus.num_tokens:,} tokens in {corpus.num_documents:,} files of {args.folder}")

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "code.sam"
        corpus.save(path)
        # A path is loaded as a read-only memory map, checked against the tokenizer.
        drafter = sd.SamDrafter(path, fallback=sd.TokenRecyclingDrafter(), tokenizer_fingerprint=fingerprint)
        messages = [{"role": "user", "content": "Write a Python function that reads a JSONL file."}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)["input_ids"]
        result = sd.generate(model, prompt, drafter=drafter, max_new_tokens=args.max_new_tokens)

    print(tokenizer.decode(result.new_tokens))
    print(f"{len(result.new_tokens)} tokens, {result.stats.mean_accepted_tokens:.2f} per forward pass")


if __name__ == "__main__":
    main()
