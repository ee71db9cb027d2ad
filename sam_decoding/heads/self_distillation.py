"""Filling the feature cache from the model's own answers (self-distillation).

Heads should learn what the target will say, so their training text is the target's own greedy
output and their targets are the target's own next-token choices. Two ways in:

* :func:`generate_features`: answer prompts with batched greedy decoding (left padding, a KV cache)
  and record each step's last hidden state and chosen token as it goes, so the answers cost one
  pass of the model and no second pass is needed to read the states.
* :func:`extract_features`: read answers already distilled (``sam-decoding distill`` output) and run
  the model once over each conversation, batched; the target after each position is the model's
  argmax there, which equals the answer's next token wherever the answer is its greedy output.

Either way, row ``j`` of a sequence holds the hidden state whose logits chose answer token
``j + 1`` and, as its target, that token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from sam_decoding.heads.features import FeatureStore
from sam_decoding.heads.identity import output_projection

#: Default bound on padded tokens per batch (prompt length x rows), so long prompts get small batches.
DEFAULT_BATCH_TOKENS = 8192
DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt as token ids (int64 ``[length]``) with its id."""

    prompt_id: str
    ids: torch.Tensor


@dataclass(frozen=True)
class Answer:
    """One generated answer: the prompt's id and the new token ids (EOS included if emitted)."""

    prompt_id: str
    tokens: list[int]


def length_batches(items: Sequence[Any], lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[Any]]:
    """``items`` grouped by similar length, each group holding at most ``batch_tokens`` padded tokens."""
    order = sorted(range(len(items)), key=lambda i: lengths[i])
    batches: list[list[Any]] = []
    current: list[int] = []
    for index in order:
        longest = max([lengths[i] for i in current] + [lengths[index]])
        if current and (len(current) + 1 > max_batch or longest * (len(current) + 1) > batch_tokens):
            batches.append([items[i] for i in current])
            current = []
        current.append(index)
    if current:
        batches.append([items[i] for i in current])
    return batches


def _cache_keyword(module: torch.nn.Module) -> str:
    # transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name still works, with a warning).
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _body(model: torch.nn.Module) -> torch.nn.Module:
    # The decoder without its output projection; its last_hidden_state is the projection's input
    # (after the final norm) for every transformers causal LM.
    return model.base_model


@torch.inference_mode()
def greedy_batch(
    model: torch.nn.Module,
    prompts: Sequence[EncodedPrompt],
    *,
    max_new_tokens: int,
    eos: Iterable[int],
    pad_token_id: int,
) -> list[tuple[Answer, np.ndarray]]:
    """Greedy answers to ``prompts`` in one left-padded batch, with the hidden state behind every token.

    Returns, per prompt, the answer and float16 ``[len(answer.tokens), hidden]``: row ``j`` is the
    last hidden state whose logits chose answer token ``j``.
    """
    device = next(model.parameters()).device
    eos_set = set(int(t) for t in eos)
    lengths = [int(p.ids.shape[0]) for p in prompts]
    rows, longest = len(prompts), max(lengths)
    input_ids = torch.full((rows, longest), pad_token_id, dtype=torch.long, device=device)
    attention = torch.zeros((rows, longest), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - lengths[row] :] = prompt.ids.to(device)
        attention[row, longest - lengths[row] :] = 1
    positions = (attention.cumsum(-1) - 1).clamp_min(0)
    projection = output_projection(model)
    body = _body(model)
    cache = {_cache_keyword(body): DynamicCache(config=model.config)}
    states: list[list[np.ndarray]] = [[] for _ in range(rows)]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    active = [True] * rows
    for _ in range(max_new_tokens):
        output = body(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **cache)
        last = output.last_hidden_state[:, -1]
        chosen = projection(last).argmax(dim=-1)
        last_half = last.half().cpu().numpy()
        for row in range(rows):
            if active[row]:
                token = int(chosen[row])
                tokens[row].append(token)
                states[row].append(last_half[row])
                if token in eos_set:
                    active[row] = False
        if not any(active):
            break
        chosen = torch.where(torch.tensor(active, device=device), chosen, torch.full_like(chosen, pad_token_id))
        input_ids = chosen.unsqueeze(1)
        attention = torch.cat([attention, torch.ones((rows, 1), dtype=attention.dtype, device=device)], dim=1)
        positions = positions[:, -1:] + 1
    return [
        (Answer(prompt.prompt_id, tokens[row]), np.stack(states[row]) if states[row] else np.zeros((0, last_half.shape[1]), np.float16))
        for row, prompt in enumerate(prompts)
    ]


def generate_features(
    model: torch.nn.Module,
    prompts: Sequence[EncodedPrompt],
    store: FeatureStore,
    *,
    max_new_tokens: int,
    eos: Sequence[int],
    pad_token_id: int,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH,
    on_answer: Callable[[Answer], None] | None = None,
) -> int:
    """Answer the ``prompts`` not yet in ``store`` and cache their states; return how many were answered."""
    done = store.sequence_ids()
    todo = [p for p in prompts if p.prompt_id not in done]
    # Budget the batch by its padded prompt plus answer, the KV cache it will hold.
    lengths = [int(p.ids.shape[0]) + max_new_tokens for p in todo]
    for batch in length_batches(todo, lengths, batch_tokens, max_batch):
        for answer, states in greedy_batch(model, batch, max_new_tokens=max_new_tokens, eos=eos, pad_token_id=pad_token_id):
            store.append(answer.prompt_id, states, np.asarray(answer.tokens, dtype=np.int32))
            if on_answer is not None:
                on_answer(answer)
    return len(todo)


@torch.inference_mode()
def extract_features(
    model: torch.nn.Module,
    conversations: Sequence[tuple[str, torch.Tensor, int]],
    store: FeatureStore,
    *,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH,
    on_sequence: Callable[[str], None] | None = None,
) -> int:
    """Cache the states of existing answers: ``(id, prompt + answer ids [length], prompt length)`` each.

    The model runs once over each whole conversation (right padding, batched); the rows are the
    positions from the prompt's last token to the answer's second-to-last, and each target is the
    model's own argmax there. Returns how many conversations were added.
    """
    device = next(model.parameters()).device
    projection = output_projection(model)
    body = _body(model)
    done = store.sequence_ids()
    todo = [c for c in conversations if c[0] not in done and int(c[1].shape[0]) - c[2] >= 1]
    lengths = [int(c[1].shape[0]) for c in todo]
    for batch in length_batches(todo, lengths, batch_tokens, max_batch):
        longest = max(int(ids.shape[0]) for _, ids, _ in batch)
        input_ids = torch.zeros((len(batch), longest), dtype=torch.long, device=device)
        attention = torch.zeros((len(batch), longest), dtype=torch.long, device=device)
        for row, (_, ids, _) in enumerate(batch):
            input_ids[row, : ids.shape[0]] = ids.to(device)
            attention[row, : ids.shape[0]] = 1
        hidden = body(input_ids=input_ids, attention_mask=attention).last_hidden_state
        for row, (sequence_id, ids, prompt_length) in enumerate(batch):
            rows = hidden[row, prompt_length - 1 : int(ids.shape[0]) - 1]
            targets = projection(rows).argmax(dim=-1)
            store.append(sequence_id, rows.half().cpu().numpy(), targets.cpu().numpy().astype(np.int32))
            if on_sequence is not None:
                on_sequence(sequence_id)
    return len(todo)
