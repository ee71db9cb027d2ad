"""Medusa-1 draft heads: K small residual blocks on the target's last hidden state.

Head ``k`` (1-based) reads the hidden state ``h_p`` whose logits chose the token at position
``p + 1`` and predicts the token at ``p + k + 1``: the target's own output projection, frozen,
applied to ``h_p + SiLU(W_k h_p + b_k)``. The blocks start at zero, so an untrained head
predicts what the target predicts next (Medusa-1, Cai et al. 2024). Only the blocks are trained
and saved; the projection is the model's own.

Heads may be restricted to a *draft vocabulary*: a subset of token ids they can propose. Training
and drafting then multiply by those rows of the projection only, which on a CPU is most of the
heads' cost (SmolLM2's projection is 49152 x 576; the blocks are 576 x 576 each).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from sam_decoding.heads.file_format import MAX_HEADS, StoredHeads, TrainingRecord, read_heads_file, write_heads_file
from sam_decoding.heads.identity import ModelIdentity, output_projection

DEFAULT_NUM_HEADS = 4


class ResidualBlock(nn.Module):
    """``x + SiLU(Linear(x))`` with the linear layer initialised to zero (the identity at first)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + nn.functional.silu(self.linear(hidden))


class MedusaHeads(nn.Module):
    """``num_heads`` draft heads bound to one model's (frozen) output projection.

    Make fresh ones with :meth:`create`, read a file with :meth:`load`, write one with :meth:`save`.

    Attributes:
        blocks: The trainable residual blocks, one per head (head ``k`` is ``blocks[k - 1]``).
        vocabulary: int64 ``[V']`` sorted token ids the heads may propose, or ``None`` for all tokens.
        identity: The base model's :class:`~sam_decoding.heads.identity.ModelIdentity`.
        tokenizer_fingerprint: The training tokenizer's fingerprint, if known.
        training: How the heads were trained (data, time, held-out accuracy), if recorded.
    """

    def __init__(
        self,
        projection: nn.Linear,
        num_heads: int,
        *,
        identity: ModelIdentity,
        vocabulary: torch.Tensor | None = None,
        tokenizer_fingerprint: str | None = None,
        training: TrainingRecord | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= num_heads <= MAX_HEADS:
            raise ValueError(f"num_heads must lie in [1, {MAX_HEADS}], got {num_heads}")
        hidden_size = projection.in_features
        self.blocks = nn.ModuleList(ResidualBlock(hidden_size) for _ in range(num_heads))
        self.identity = identity
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.training_record = training
        self.vocabulary = None if vocabulary is None else _checked_vocabulary(vocabulary, projection.out_features)
        # The projection stays the model's: kept as plain tensors (not parameters, not in the
        # state dict), sliced to the draft vocabulary once here rather than at every step.
        weight = projection.weight.detach()
        bias = projection.bias.detach() if projection.bias is not None else None
        if self.vocabulary is not None:
            rows = self.vocabulary.to(weight.device)
            weight = weight[rows]
            bias = bias[rows] if bias is not None else None
        self._weight = weight.float()
        self._bias = None if bias is None else bias.float()
        self.to(self._weight.device)

    @classmethod
    def create(
        cls,
        model: nn.Module,
        num_heads: int = DEFAULT_NUM_HEADS,
        *,
        vocabulary: torch.Tensor | None = None,
        tokenizer_fingerprint: str | None = None,
    ) -> MedusaHeads:
        """Untrained heads for ``model`` (each predicts what the model predicts next)."""
        return cls(
            output_projection(model),
            num_heads,
            identity=ModelIdentity.of(model),
            vocabulary=vocabulary,
            tokenizer_fingerprint=tokenizer_fingerprint,
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model: nn.Module, *, tokenizer_fingerprint: str | None = None
    ) -> MedusaHeads:
        """Read heads saved by :meth:`save` and bind them to ``model``.

        Raises:
            HeadsFormatError: The file is not a heads file, or is truncated or corrupt.
            HeadsMismatchError: The heads were trained for another model (or, when
                ``tokenizer_fingerprint`` is given, another tokenizer).
        """
        stored = read_heads_file(path)
        stored.check_model(model, tokenizer_fingerprint, path)
        heads = cls(
            output_projection(model),
            stored.num_heads,
            identity=stored.identity,
            vocabulary=stored.vocabulary,
            tokenizer_fingerprint=stored.tokenizer_fingerprint,
            training=stored.training,
        )
        heads.load_state_dict(stored.block_state)
        return heads.eval()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the heads (blocks as float16) and their base model's identity to ``path`` (safetensors)."""
        write_heads_file(self.stored(), path)

    def stored(self) -> StoredHeads:
        """The heads as a heads file holds them: blocks, identity, vocabulary and training record."""
        return StoredHeads(
            num_heads=self.num_heads,
            identity=self.identity,
            vocabulary=self.vocabulary,
            tokenizer_fingerprint=self.tokenizer_fingerprint,
            training=self.training_record,
            block_state=self.state_dict(),
        )

    @property
    def num_heads(self) -> int:
        """Number of heads, i.e. the deepest draft position they predict (tokens)."""
        return len(self.blocks)

    @property
    def hidden_size(self) -> int:
        """Width of the hidden state the heads read, in features."""
        return int(self._weight.shape[1])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the draft vocabulary: ``[..., hidden]`` -> float32 ``[..., num_heads, V']``."""
        hidden = hidden.to(self._weight.device, torch.float32)
        states = torch.stack([block(hidden) for block in self.blocks], dim=-2)
        return nn.functional.linear(states, self._weight, self._bias)

    def token_ids(self, indices: torch.Tensor) -> torch.Tensor:
        """Token ids of draft-vocabulary indices (the identity without a draft vocabulary)."""
        if self.vocabulary is None:
            return indices
        return self.vocabulary.to(indices.device)[indices]

    def vocabulary_indices(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary index of each token id, ``-1`` for tokens the heads cannot propose."""
        if self.vocabulary is None:
            return token_ids.long()
        lookup = torch.full((self.identity.vocab_size,), -1, dtype=torch.long)
        lookup[self.vocabulary] = torch.arange(len(self.vocabulary))
        return lookup.to(token_ids.device)[token_ids.long()]

    @torch.inference_mode()
    def top_candidates(self, hidden: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each head's ``width`` likeliest tokens after one hidden state ``[hidden]``.

        Returns:
            int64 ``[num_heads, width]`` token ids (most likely first) and float64 ``[num_heads, width]``
            their softmax probabilities under each head (over the draft vocabulary).
        """
        probabilities = torch.softmax(self(hidden), dim=-1)
        values, indices = torch.topk(probabilities, min(width, probabilities.shape[-1]), dim=-1)
        return self.token_ids(indices).cpu(), values.double().cpu()


def _checked_vocabulary(vocabulary: torch.Tensor, vocab_size: int) -> torch.Tensor:
    ids = torch.as_tensor(vocabulary).long().reshape(-1).cpu()
    if len(ids) == 0:
        raise ValueError("the draft vocabulary is empty")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"draft vocabulary ids must lie in [0, {vocab_size})")
    if len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all()):
        raise ValueError("draft vocabulary ids must be sorted and distinct")
    return ids
