"""The digits data of the command-line tests, and ``--data module:function`` targets."""

from __future__ import annotations

from typing import Any

import numpy as np


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first 256 digits as NCHW float32 images in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:256, None] / 16.0).astype(np.float32), d.target[:256].astype(np.int64)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (x, y) numpy arrays (NCHW)."""
    return digits()


def digits_loader() -> Any:
    """The digits as a PyTorch DataLoader of (x, y) batches (NCHW)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = digits()
    return DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=32)
