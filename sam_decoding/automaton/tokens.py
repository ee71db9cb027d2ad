"""Token ids entering the package: conversion to NumPy and the one range check.

Token ids come from users as lists, NumPy arrays or torch tensors. :func:`as_token_array` turns
any of them into a 1-D integer array without a copy where the dtype already fits;
:func:`checked_token_array` also checks every id against ``[0, MAX_TOKEN_ID]`` and gives the
uint32 array the native builds take. The native core checks ids again at its own public entry
points (cursor feeds, dynamic extends), so a Python caller checks only what it hands to a build.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

import numpy as np

#: Largest token id (ids are 31-bit: the core keeps the top bit of a 32-bit word for itself).
MAX_TOKEN_ID: int = 2**31 - 1

TokenSequence = Union[Sequence[int], np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]


def as_token_array(tokens: TokenSequence | int) -> np.ndarray:
    """``tokens`` as a 1-D integer NumPy array (no copy for int32/uint32/int64 arrays).

    Raises ``TypeError`` for non-integer input and ``ValueError`` for other shapes; the native
    layer checks that every id lies in ``[0, 2**31 - 1]``.
    """
    if isinstance(tokens, np.ndarray):
        array = tokens
    else:
        if isinstance(tokens, (str, bytes)):
            raise TypeError("token ids must be integers, got a string")
        if hasattr(tokens, "detach") and hasattr(tokens, "cpu"):  # a torch tensor
            array = tokens.detach().cpu().numpy()
        else:
            array = np.asarray(tokens)
            if array.size == 0:
                array = np.zeros(0, dtype=np.int64)
    if array.dtype == np.bool_ or array.dtype.kind not in "iu":
        if array.dtype.kind == "O":
            raise TypeError("token ids must be integers; got values too large or of mixed types")
        raise TypeError(f"token ids must be integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"token ids must be a 1-D sequence, got shape {array.shape}")
    return array


def checked_token_array(tokens: TokenSequence) -> np.ndarray:
    """``tokens`` as a uint32 array (no copy if it already is one), every id checked to lie in
    ``[0, 2^31-1]``: raises ``TypeError``/``ValueError`` as :func:`as_token_array` does, and
    ``ValueError`` naming the first offending extreme."""
    array = as_token_array(tokens)
    if array.shape[0]:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > MAX_TOKEN_ID:
            raise ValueError(f"token ids must be in [0, 2^31-1], got {low if low < 0 else high}")
    return array.astype(np.uint32, copy=False)


def check_token(token: int) -> int:
    """One token id as an ``int``, checked to lie in ``[0, 2^31-1]``."""
    token = int(token)
    if not 0 <= token <= MAX_TOKEN_ID:
        raise ValueError(f"token ids must be in [0, 2^31-1], got {token}")
    return token


def check_count(name: str, value: int) -> int:
    """A non-negative int setting as an ``int`` (``TypeError`` for a non-int, ``ValueError`` below 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)
