"""Regenerate ``golden_heads_v1.safetensors``: a heads file of format version 1 with fixed contents.

Run once from the repository root: ``python tests/data/make_golden_heads.py``; never regenerate it once committed:
it must keep loading in later versions (``test_golden_file_of_format_version_1_still_reads``); a new
format version gets a new golden file beside this one rather than replacing it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sam_decoding.heads.identity import ModelIdentity, probe_row_indices
from sam_decoding.heads.model import MedusaHeads


def main() -> None:
    hidden, vocab = 8, 20
    projection = torch.nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        projection.weight.copy_(torch.arange(vocab * hidden, dtype=torch.float32).reshape(vocab, hidden) / 100)
    probe = projection.weight.detach()[probe_row_indices(vocab)].clone()
    identity = ModelIdentity("llama", hidden, vocab, "0123456789abcdef", probe)
    heads = MedusaHeads(
        projection,
        2,
        identity=identity,
        vocabulary=torch.arange(0, 12, 2),
        tokenizer_fingerprint="golden-tokenizer",
        training={"note": "golden file, format version 1"},
    )
    pattern = torch.arange(hidden * hidden, dtype=torch.float32).reshape(hidden, hidden) / 64
    with torch.no_grad():
        for k, block in enumerate(heads.blocks):
            block.linear.weight.copy_(pattern + k)
            block.linear.bias.fill_(0.5 * k)
    heads.save(Path(__file__).with_name("golden_heads_v1.safetensors"))


if __name__ == "__main__":
    main()
