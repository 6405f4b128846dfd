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
    if k >= flat.size:
        mask[:] = 0.0
    elif k > 0:
        # The k-th smallest value by selection (linear time; a full sort costs tens of ms per large
        # kernel at every schedule step): everything below it goes, then the first ties by position,
        # which is exactly what a stable sort would drop.
        threshold = _kth_smallest(flat, k)
        if np.isnan(threshold):  # NaN sorts last: fall back to the sort's own order
            mask[np.argsort(flat, kind="stable")[:k]] = 0.0
        else:
            below = flat < threshold
            mask[below] = 0.0
            mask[np.flatnonzero(flat == threshold)[: k - int(np.count_nonzero(below))]] = 0.0
    return mask.reshape(scores.shape)


def _kth_smallest(flat: np.ndarray, k: int) -> float:
    """The ``k``-th smallest entry (1-based) of a 1-d array.

    Selection slows down a hundredfold when the k-th value sits at the edge of a large block of equal
    values, which is every schedule step of gradual pruning (the entries pruned so far are exact
    zeros, the minimum of the magnitudes): so the minimum's block is counted first and only the rest
    is searched.
    """
    low = flat.min()
    at_low = flat == low
    n_low = int(np.count_nonzero(at_low))
    if k <= n_low or np.isnan(low):
        return float(low)
    rest = flat[~at_low]
    return float(np.partition(rest, k - n_low - 1)[k - n_low - 1])


def sparsity(array: np.ndarray) -> float:
    """Fraction of exact zeros."""
    return float(np.count_nonzero(array == 0)) / max(1, array.size)
