"""Mask arithmetic on numpy arrays shared by pruning algorithms."""

from __future__ import annotations

import numpy as np


def to_canonical(kernel: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    """Transposes a native kernel to canonical (out, in, *spatial) order."""
    return np.transpose(kernel, perm) if perm else kernel


def from_canonical(array: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_canonical`."""
    return np.transpose(array, np.argsort(perm)) if perm else array


def smallest_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """A 0/1 mask of ``scores``' shape with exactly the ``k`` smallest entries set to 0.

    Ties are broken by position (a stable sort), so the same scores in the same canonical order give
    the same mask on every framework, and the count of zeros is exact.
    """
    flat = scores.reshape(-1)
    mask = np.ones(flat.shape, dtype=np.float32)
    if k > 0:
        order = np.argsort(flat, kind="stable")
        mask[order[:k]] = 0.0
    return mask.reshape(scores.shape)


def sparsity(array: np.ndarray) -> float:
    """Fraction of exact zeros."""
    return float(np.count_nonzero(array == 0)) / max(1, array.size)
