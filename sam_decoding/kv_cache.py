"""Rolling a transformers ``DynamicCache`` back to exactly the tokens that were kept.

Speculative steps write keys/values for every draft node; afterwards only the accepted path may
remain, so that the next forward pass sees precisely the context ordinary decoding would have.
Only the public layer tensors (``cache.layers[i].keys`` / ``.values``) are touched.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


class UnsupportedCacheError(ValueError):
    """The model's cache layout cannot be rolled back exactly (sliding-window, linear or quantized layers)."""


def cache_keyword(model: torch.nn.Module) -> str:
    """The name under which ``model.forward`` takes its KV cache: ``"cache"`` (transformers >= 5.24)
    or the older ``"past_key_values"`` (deprecated in 5.24, removed in 5.40), read from the signature."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_arguments(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand ``cache`` to ``model.forward`` under the name it expects."""
    return {cache_keyword(model): cache}


def keep_cache_entries(cache, past_length: int, path: list[int]) -> None:
    """Keep the cached keys/values of the prefix plus the fed inputs ``path``; drop everything after.

    ``cache`` is a ``DynamicCache`` holding ``past_length`` prefix entries followed by the entries of
    this step's inputs. A path of consecutive indices from 0 (every chain, and trees along first
    children) is a plain cut; otherwise the kept entries are moved down in place first.
    """
    keep = len(path)
    contiguous = path[-1] == keep - 1
    index = None if contiguous else torch.tensor(path, dtype=torch.long) + past_length
    for layer in cache.layers:
        keys, values = layer.keys, layer.values
        if keys is None or keys.numel() == 0:
            continue
        if index is not None:
            index = index.to(keys.device)
            keys[..., past_length : past_length + keep, :] = keys.index_select(-2, index)
            values[..., past_length : past_length + keep, :] = values.index_select(-2, index)
        layer.keys = keys[..., : past_length + keep, :]
        layer.values = values[..., : past_length + keep, :]


def truncate_cache(cache, length: int) -> None:
    """Cut a ``DynamicCache`` back to its first ``length`` positions."""
    for layer in cache.layers:
        if layer.keys is not None and layer.keys.numel() and layer.keys.shape[-2] > length:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]


def check_cache_layout(cache) -> None:
    """Raise :class:`UnsupportedCacheError` unless every layer of ``cache`` is a full-attention dynamic layer."""
    from transformers.cache_utils import DynamicLayer

    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise UnsupportedCacheError(
                f"speculative verification needs full-attention DynamicLayer caches; this model uses "
                f"{type(layer).__name__} (sliding-window, linear or quantized caches cannot be rolled back exactly)"
            )
