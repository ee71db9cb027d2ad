"""Plug a drafter into transformers' own model.generate, and check the output is plain greedy's.

    python examples/custom_generate.py [--max-new-tokens N]

model.generate prepares the generation config, logits processors and stopping criteria as usual and
hands them to sam_decoding.custom_generate, which runs the speculative loop with them.
"""

from __future__ import annotations

import argparse

import torch

import sam_decoding as sd
from sam_decoding.models import load_model, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    tokenizer, model = load_tokenizer(), load_model()
    messages = [{"role": "user", "content": "List the days of the week, one per line, then again in reverse."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]

    # No corpus: the dynamic automaton drafts from the prompt and the text so far; Token Recycling
    # drafts from the model's own earlier top-k guesses where the automaton has no match.
    drafter = sd.SamDrafter(fallback=sd.TokenRecyclingDrafter())
    stats: list[sd.GenerationStats] = []
    speculative = model.generate(prompt, custom_generate=sd.custom_generate, drafter=drafter,
                                 stats_callback=stats.append, max_new_tokens=args.max_new_tokens, do_sample=False)
    plain = model.generate(prompt, max_new_tokens=args.max_new_tokens, do_sample=False)

    print(tokenizer.decode(speculative[0, prompt.shape[1]:]))
    print(f"{stats[0].mean_accepted_tokens:.2f} tokens per forward pass")
    print(f"identical to plain model.generate: {torch.equal(speculative, plain)}")


if __name__ == "__main__":
    main()
