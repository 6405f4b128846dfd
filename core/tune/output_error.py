"""Label-free error of one layer's output against the float model's: SQNR and cosine similarity."""

from __future__ import annotations

import math

import numpy as np

from slimkit.quant.plan import SiteParams


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """``10 log10(sum(ref^2) / sum((ref - got)^2))`` over every value; ``inf`` when they are equal, ``-inf``
    when ``ref`` is all zero and ``got`` is not."""
    ref, got = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    noise = float(np.sum((ref - got) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine similarity of the two outputs as vectors (every sample, every value); 1 when both are all
    zero, 0 when only one is (nothing of the output is left, or nothing was there)."""
    ref, got = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    a, b = float(np.linalg.norm(ref)), float(np.linalg.norm(got))
    if a == 0.0 or b == 0.0:
        return 1.0 if a == b else 0.0
    return float(np.clip(np.dot(ref, got) / (a * b), -1.0, 1.0))


def on_grid(x: np.ndarray, p: SiteParams | None) -> np.ndarray:
    """``x`` fake-quantized per tensor with ``p`` (QuantizeLinear then DequantizeLinear), as the layer's
    output site makes it; ``x`` itself when the output has no fixed site.

    Adapters read a node either before or after its own fake-quant op; quantizing an on-grid value again
    returns it, so the result is the deployed tensor either way.
    """
    if p is None or np.ndim(p.scale) != 0:
        return np.asarray(x, np.float32)
    scale = np.float32(p.scale)
    zp = np.float32(p.zero_point)
    q = np.clip(np.rint(np.asarray(x, np.float32) / scale) + zp, p.qmin, p.qmax)
    return ((q - zp) * scale).astype(np.float32)
