"""Rolling a transformers ``DynamicCache`` back to exactly the tokens that were kept.

Speculative steps write keys/values for every draft node; afterwards only the accepted path may
remain, so that the next forward pass sees precisely the context ordinary decoding would have.
Only the public layer tensors (``cache.layers[i].keys`` / ``.values``) are touched.

Sliding-window models (Mistral, Gemma 2, Gemma 3) get a cache whose sliding layers keep every
position (:func:`rollback_cache`): transformers' ``DynamicSlidingWindowLayer`` drops the oldest keys
as soon as a forward pass crosses the window, including keys that the accepted path still needs,
and its ``crop`` refuses from then on (transformers 5 can record the past first; 4.x cannot). The
window itself still applies: transformers builds the sliding mask from absolute positions, so the
extra keys are masked out and never weigh in.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


class UnsupportedCacheError(ValueError):
    """The model's cache layout cannot be rolled back exactly (linear-attention or quantized layers)."""


def rollback_cache(config: Any):
    """A ``DynamicCache`` for ``config`` in which every attention layer keeps all its positions.

    Sliding-window layers become plain ``DynamicLayer``s, so any cached position can be cut or
    moved; the model's sliding mask, built from absolute positions, still hides what lies outside
    the window. Memory grows with the text instead of stopping at the window.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    cache = DynamicCache(config=config)
    cache.layers = [
        DynamicLayer() if type(layer) is DynamicSlidingWindowLayer else layer for layer in cache.layers
    ]
    return cache


def sliding_window(config: Any) -> int | None:
    """The smallest attention window of ``config``'s layers in tokens (each token sees itself and the
    ``window - 1`` before it), or ``None`` when every layer attends to the whole text."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)


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
    """Raise :class:`UnsupportedCacheError` unless every layer of ``cache`` is a dynamic layer that keeps all
    its positions (see :func:`rollback_cache`)."""
    from transformers.cache_utils import DynamicLayer

    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise UnsupportedCacheError(
                f"speculative verification needs caches whose positions can be rolled back; this model uses "
                f"{type(layer).__name__} (linear-attention or quantized caches cannot be rolled back exactly; "
                f"models with full or sliding-window attention work)"
            )


def fit_tree_to_window(draft: Any, past_length: int, window: int | None) -> Any:
    """``draft``, or its first-child path as a chain once a tree would reach past the attention window.

    A tree goes through the model with a custom 4-D mask, which transformers uses as-is for every
    layer, sliding ones included; that equals the sliding mask only while no fed position is
    ``window`` tokens past the start of the text. A chain uses the model's own masks and is exact
    at any length.
    """
    if window is None or draft.parents is None or past_length + len(draft) + 1 <= window:
        return draft
    return draft.first_path(len(draft))
