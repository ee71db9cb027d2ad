"""Training heads on a feature cache: cross-entropy against the target's own next tokens.

Row ``j`` of a cached sequence holds the hidden state that chose token ``j + 1`` of the answer; head
``k`` learns to predict the token chosen ``k`` rows later (``targets[j + k]``). Sequences, not
positions, are split into training and held-out sets, so held-out accuracy is measured on
answers the heads never saw. Optimisation follows Medusa-1: AdamW at 1e-3 on the residual blocks
only, head ``k``'s loss weighted by ``0.8 ** (k - 1)``, warm-up then cosine decay.

Checkpoints (blocks, optimiser, position in the schedule) are written atomically every
``checkpoint_every`` steps and at every epoch's end; a run resumed from one continues the same
schedule over the same batches.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam_decoding.atomic_file import replacing_atomically
from sam_decoding.heads.features import FeatureStore
from sam_decoding.heads.model import MedusaHeads

#: Per-head loss decay (Medusa-1's lambda_k = 0.8^k): nearer heads matter more for acceptance.
HEAD_LOSS_DECAY = 0.8
_WARMUP_STEPS = 50


@dataclass(frozen=True)
class TrainingSettings:
    """How to train.

    Attributes:
        epochs: Passes over the training positions.
        batch_size: Positions per optimisation step.
        learning_rate: Peak AdamW learning rate.
        held_out_fraction: Share of sequences kept out of training to measure accuracy on.
        seed: Seeds the shuffling of positions (and so makes a resumed run follow the same batches).
        checkpoint_every: Steps between checkpoints.
    """

    epochs: int = 2
    batch_size: int = 256
    learning_rate: float = 1e-3
    held_out_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 200


@dataclass
class HeadAccuracy:
    """Held-out accuracy of one head: the share of positions whose target is its top 1 / in its top 5."""

    head: int
    positions: int
    top1: float
    top5: float


@dataclass
class TrainingReport:
    """What a training run measured: sizes, seconds, and held-out accuracy at the start (empty on a resume) and after."""

    train_sequences: int
    held_out_sequences: int
    train_positions: int
    held_out_positions: int
    steps: int
    seconds: float
    final_loss: float
    at_start: list[HeadAccuracy] = field(default_factory=list)
    trained: list[HeadAccuracy] = field(default_factory=list)
    draft_vocabulary_coverage: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values."""
        data = dict(self.__dict__)
        data["at_start"] = [a.__dict__ for a in self.at_start]
        data["trained"] = [a.__dict__ for a in self.trained]
        return data


def held_out(sequence_id: str, fraction: float) -> bool:
    """Whether a sequence belongs to the held-out split (a stable hash of its id, so resumes agree)."""
    bucket = int.from_bytes(hashlib.sha256(sequence_id.encode()).digest()[:4], "little") / 2**32
    return bucket < fraction


def head_targets(store: FeatureStore, held: bool, fraction: float, num_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of one split and each head's target after them.

    Returns:
        int64 ``[positions]`` cache rows and int64 ``[positions, num_heads]`` targets, ``-1`` where
        head ``k``'s target lies past the end of the sequence. Only rows with a target for head 1
        are kept.
    """
    targets = store.targets()
    rows: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for span in store.spans:
        if held_out(span.sequence_id, fraction) != held or span.length < 2:
            continue
        index = np.arange(span.start, span.start + span.length - 1, dtype=np.int64)
        label = np.full((len(index), num_heads), -1, dtype=np.int64)
        sequence = targets[span.start : span.start + span.length]
        for k in range(1, num_heads + 1):
            count = span.length - k
            if count > 0:
                label[:count, k - 1] = sequence[k:]
        rows.append(index)
        labels.append(label)
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, num_heads), np.int64)
    return np.concatenate(rows), np.concatenate(labels)


def draft_vocabulary(labels: np.ndarray, size: int, vocab_size: int) -> torch.Tensor:
    """The ``size`` token ids the heads will draft from: training targets by frequency, then the lowest ids.

    Byte-pair vocabularies number tokens roughly by merge order, so low ids are frequent pieces
    of text in general; they fill the set beyond what the training answers used.
    """
    if size >= vocab_size:
        return torch.arange(vocab_size)
    counts = np.bincount(labels[labels >= 0].reshape(-1), minlength=vocab_size)
    seen = np.flatnonzero(counts)
    chosen = seen[np.argsort(-counts[seen], kind="stable")][:size]
    if len(chosen) < size:
        rest = np.setdiff1d(np.arange(vocab_size), chosen, assume_unique=True)[: size - len(chosen)]
        chosen = np.concatenate([chosen, rest])
    return torch.from_numpy(np.sort(chosen)).long()


@torch.no_grad()
def evaluate(heads: MedusaHeads, hidden: np.ndarray, rows: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> list[HeadAccuracy]:
    """Per-head top-1 / top-5 accuracy on ``rows`` (targets outside the draft vocabulary count as misses)."""
    num_heads = heads.num_heads
    hits1 = np.zeros(num_heads)
    hits5 = np.zeros(num_heads)
    counts = np.zeros(num_heads)
    for start in range(0, len(rows), batch_size):
        index = rows[start : start + batch_size]
        states = torch.from_numpy(np.asarray(hidden[index], dtype=np.float32))
        top = heads.token_ids(torch.topk(heads(states), 5, dim=-1).indices).numpy()  # [b, K, 5]
        target = labels[start : start + batch_size]
        valid = target >= 0
        hits1 += ((top[..., 0] == target) & valid).sum(axis=0)
        hits5 += ((top == target[..., None]).any(axis=-1) & valid).sum(axis=0)
        counts += valid.sum(axis=0)
    return [
        HeadAccuracy(k + 1, int(counts[k]), float(hits1[k] / max(counts[k], 1)), float(hits5[k] / max(counts[k], 1)))
        for k in range(num_heads)
    ]


def _learning_rate(step: int, total: int, peak: float) -> float:
    if step < _WARMUP_STEPS:
        return peak * (step + 1) / _WARMUP_STEPS
    progress = (step - _WARMUP_STEPS) / max(1, total - _WARMUP_STEPS)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(
    heads: MedusaHeads,
    store: FeatureStore,
    settings: TrainingSettings,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainingReport:
    """Train ``heads`` (in place) on ``store``; resume from ``checkpoint`` if it exists.

    ``on_step(step, total_steps, loss)`` is called after every step (for a progress bar).
    """
    started = time.perf_counter()
    hidden = store.hidden()
    train_rows, train_labels = head_targets(store, False, settings.held_out_fraction, heads.num_heads)
    held_rows, held_labels = head_targets(store, True, settings.held_out_fraction, heads.num_heads)
    if len(train_rows) == 0:
        raise ValueError("no training positions: the feature cache holds no answers of two tokens or more")
    subset = heads.vocabulary_indices(torch.from_numpy(train_labels).clamp_min(0))
    train_subset = torch.where(torch.from_numpy(train_labels) >= 0, subset, torch.full_like(subset, -1))
    steps_per_epoch = math.ceil(len(train_rows) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    optimizer = torch.optim.AdamW(heads.blocks.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    weights = torch.tensor([HEAD_LOSS_DECAY**k for k in range(heads.num_heads)])
    step = 0
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    if checkpoint_path is not None and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])

    # Fresh heads (zero blocks) each predict the model's own next token again: the baseline.
    at_start = evaluate(heads, hidden, held_rows, held_labels) if step == 0 and len(held_rows) else []
    loss_value = float("nan")
    heads.train()
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        order = np.random.default_rng(settings.seed + epoch).permutation(len(train_rows))
        batch = np.sort(order[offset * settings.batch_size : (offset + 1) * settings.batch_size])
        states = torch.from_numpy(np.asarray(hidden[train_rows[batch]], dtype=np.float32))
        labels = train_subset[batch]
        logits = heads(states)  # [b, K, V']
        per_head = torch.stack(
            [
                torch.nn.functional.cross_entropy(logits[:, k], labels[:, k], ignore_index=-1, reduction="sum")
                / (labels[:, k] >= 0).sum().clamp_min(1)
                for k in range(heads.num_heads)
            ]
        )
        loss = (per_head * weights).sum()
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, total, settings.learning_rate)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        loss_value = float(loss.detach())
        if on_step is not None:
            on_step(step, total, loss_value)
        if checkpoint_path is not None and (step % settings.checkpoint_every == 0 or step % steps_per_epoch == 0):
            _save_checkpoint(checkpoint_path, heads, optimizer, step)
    heads.eval()
    trained = evaluate(heads, hidden, held_rows, held_labels) if len(held_rows) else []
    valid = held_labels[held_labels >= 0]
    coverage = 1.0
    if heads.vocabulary is not None and len(valid):
        coverage = float(np.isin(valid, heads.vocabulary.numpy()).mean())
    return TrainingReport(
        train_sequences=sum(1 for s in store.spans if not held_out(s.sequence_id, settings.held_out_fraction)),
        held_out_sequences=sum(1 for s in store.spans if held_out(s.sequence_id, settings.held_out_fraction)),
        train_positions=len(train_rows),
        held_out_positions=len(held_rows),
        steps=total,
        seconds=time.perf_counter() - started,
        final_loss=loss_value,
        at_start=at_start,
        trained=trained,
        draft_vocabulary_coverage=coverage,
    )


def _save_checkpoint(path: Path, heads: MedusaHeads, optimizer: torch.optim.Optimizer, step: int) -> None:
    with replacing_atomically(path) as temporary:
        torch.save({"heads": heads.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, temporary)
