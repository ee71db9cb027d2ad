"""Turning a user's text into prompt token ids: raw, or as a chat turn through the chat template."""

from __future__ import annotations

from typing import Any

import torch


def chat_prompt_ids(tokenizer: Any, message: str, *, system: str | None = None) -> torch.Tensor:
    """``message`` as a single user turn (after a ``system`` turn, if given), rendered with the chat
    template and the assistant's generation prompt; int64 ``[1, length]``. Raises ``ValueError`` if
    the tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; use a raw prompt instead")
    messages = [{"role": "system", "content": system}] if system is not None else []
    encoded = tokenizer.apply_chat_template(
        messages + [{"role": "user", "content": message}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    return encoded["input_ids"].long()


def raw_prompt_ids(tokenizer: Any, text: str) -> torch.Tensor:
    """``text`` tokenized as is (with the tokenizer's usual special tokens); int64 ``[1, length]``."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"].long()
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty")
    return ids


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end an answer: the model's generation config's, else the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    if configured is None:
        return []
    return [int(configured)] if isinstance(configured, int) else [int(t) for t in configured]
