"""The order in which fine-tuning visits numpy training data, defined once for every framework.

Both adapters draw their batches from :class:`ArrayBatches`: each epoch is a permutation of the
samples (or their order, unshuffled) from one numpy generator seeded by the recipe, cut into
``batch_size`` slices with a smaller last batch (nothing is dropped). Twins given the same seed see
the same samples in the same batches, shuffled or not; a framework's own loader (tf.data, a torch
DataLoader) keeps its own order.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np


class ArrayBatches:
    """Epochs of index batches over ``n`` samples.

    Args:
        n: number of samples.
        batch_size: samples per batch; the last batch of an epoch holds the rest.
        shuffle: draw a new permutation for every epoch from ``rng``.
        rng: the adapter's batch-order generator (seeded from the recipe's ``seed``).
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, rng: np.random.Generator) -> None:
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self._rng = rng

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(self.n / self.batch_size)

    def epoch(self) -> list[np.ndarray]:
        """The next epoch's batches of sample indices (draws from the generator when shuffling)."""
        order = self._rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        return [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]

    def epochs(self, count: int) -> Iterator[list[np.ndarray]]:
        """``count`` epochs, one list of index batches each."""
        for _ in range(count):
            yield self.epoch()
