"""Sampling with speculative decoding: the same distribution as ordinary sampling, reproducible by seed.

    python examples/sampling.py [--temperature T] [--top-p P] [--seed S] [--max-new-tokens N]

Each drafted token is accepted or resampled so that every emitted token has exactly the distribution
model.generate(do_sample=True, ...) would give it; a seeded generator makes a run repeatable.
"""

from __future__ import annotations

import argparse

import torch

import sam_decoding as sd
from sam_decoding.models import load_model, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    tokenizer, model = load_tokenizer(), load_model()
    messages = [{"role": "user", "content": "Tell me a short story about a lighthouse."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]

    def sample() -> sd.GenerationResult:
        return sd.generate(model, prompt, do_sample=True, temperature=args.temperature, top_p=args.top_p,
                           max_new_tokens=args.max_new_tokens, generator=torch.Generator().manual_seed(args.seed))

    first, again = sample(), sample()
    print(tokenizer.decode(first.new_tokens))
    print(f"{first.stats.mean_accepted_tokens:.2f} tokens per forward pass")
    print(f"same seed, same text: {torch.equal(first.sequences, again.sequences)}")


if __name__ == "__main__":
    main()
