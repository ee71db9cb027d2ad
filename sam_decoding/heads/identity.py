"""Which base model a set of heads belongs to, checked before the heads are bound to a model.

Heads read the target's last hidden state and end in the target's own output projection, so they
are only meaningful on the model they were trained for. The identity kept in a heads file is the
architecture (type, sizes, a hash of the shape-defining config fields) plus a probe of the output
projection: a few of its rows, compared with a tolerance so that the same weights loaded in
float32, float16 or bfloat16 still match while another model (or another fine-tune) does not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

# Config fields that fix the network's shape and numerics; generation settings, paths and
# transformers bookkeeping are left out so that the same model loaded two ways hashes the same.
_ARCHITECTURE_FIELDS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "hidden_act",
    "activation_function",
    "rms_norm_eps",
    "layer_norm_epsilon",
    "tie_word_embeddings",
)
#: Rows of the output projection kept as the probe (spread evenly over the vocabulary).
PROBE_ROWS = 16
# bfloat16 keeps 8 significant bits (relative error <= 2^-8); a probe differing by more than
# this, relative to the rows' scale, comes from other weights.
_PROBE_TOLERANCE = 1e-2


def output_projection(model: torch.nn.Module) -> torch.nn.Linear:
    """The model's output projection (``lm_head``): hidden state -> vocabulary logits."""
    projection = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(projection, torch.nn.Linear):
        raise TypeError(f"{type(model).__name__} has no linear output projection (get_output_embeddings())")
    return projection


def probe_row_indices(vocab_size: int, rows: int = PROBE_ROWS) -> torch.Tensor:
    """int64 ``[min(rows, vocab_size)]``: the output-projection rows a probe keeps."""
    return torch.linspace(0, vocab_size - 1, steps=min(rows, vocab_size)).round().long().unique()


@dataclass(frozen=True)
class ModelIdentity:
    """What a heads file records about its base model.

    Attributes:
        model_type: The config's ``model_type`` (``"llama"``, ``"gpt2"``, ...).
        hidden_size: Width of the last hidden state (the output projection's input), in features.
        vocab_size: Rows of the output projection (tokens).
        config_sha256: Hash of the shape-defining config fields (hex, 16 characters).
        probe: float32 ``[rows, hidden_size]``: output-projection rows at :func:`probe_row_indices`.
    """

    model_type: str
    hidden_size: int
    vocab_size: int
    config_sha256: str
    probe: torch.Tensor

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelIdentity:
        """The identity of a loaded Hugging Face causal LM."""
        projection = output_projection(model)
        weight = projection.weight.detach()
        vocab_size, hidden_size = int(weight.shape[0]), int(weight.shape[1])
        config = model.config
        fields = {name: _plain(getattr(config, name)) for name in _ARCHITECTURE_FIELDS if getattr(config, name, None) is not None}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
        probe = weight[probe_row_indices(vocab_size).to(weight.device)].float().cpu()
        return cls(str(getattr(config, "model_type", "unknown")), hidden_size, vocab_size, digest, probe)

    @property
    def fingerprint(self) -> str:
        """A short human-readable name of the identity, for messages."""
        return f"{self.model_type}-h{self.hidden_size}-v{self.vocab_size}-cfg{self.config_sha256[:8]}"

    def metadata(self) -> dict[str, Any]:
        """The JSON-friendly fields (the probe is stored as a tensor beside them)."""
        return {
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "config_sha256": self.config_sha256,
            "fingerprint": self.fingerprint,
        }

    def mismatch(self, other: ModelIdentity) -> str | None:
        """Why ``other`` (a loaded model's identity) is not this one, or ``None`` if it is."""
        if (self.model_type, self.hidden_size, self.vocab_size) != (other.model_type, other.hidden_size, other.vocab_size):
            return f"the heads were trained for {self.fingerprint}, this model is {other.fingerprint}"
        if self.config_sha256 != other.config_sha256:
            return f"the heads were trained for {self.fingerprint}, this model's architecture differs ({other.fingerprint})"
        if self.probe.shape != other.probe.shape:
            return "the output-projection probe has another shape"
        scale = float(self.probe.abs().max().clamp_min(1e-6))
        difference = float((self.probe - other.probe).abs().max())
        if difference > _PROBE_TOLERANCE * scale:
            return (
                f"same architecture ({self.fingerprint}) but other weights: the output projection differs "
                f"by {difference:.3g} (scale {scale:.3g}); the heads were trained on another checkpoint"
            )
        return None


def _plain(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else str(value)
