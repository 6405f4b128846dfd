"""Fine-tuning batches as the built-in PyTorch loop iterates them: numpy data drawn in core's order, and
in a distributed job each rank's share of every global batch (with the global batch's size, which the loop
needs to weigh each rank's loss)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from slimkit.adapters.torch import distributed
from slimkit.data import take
from slimkit.errors import DataError


class Epoch:
    """One epoch of (x, y) tensor batches, gathered lazily from index batches (x in any input form); in a
    distributed job each global batch's share of this rank (``job``)."""

    def __init__(self, x: Any, y: torch.Tensor, batches: list[np.ndarray],
                 job: distributed.TorchCollective | None = None) -> None:
        self._x, self._y, self._batches, self._job = x, y, batches, job
        self.global_count: int | None = None

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Any:
        for idx in self._batches:
            self.global_count = len(idx)
            if self._job is not None:
                idx = distributed.share(idx, self._job)
                if not len(idx):
                    raise DataError(f"fine_tune.batch_size: a batch of {self.global_count} sample(s) cannot be "
                                    f"split over {self._job.size} ranks; choose a batch size and sample count "
                                    "whose last batch has at least one sample per rank")
            index = torch.from_numpy(idx).to(self._y.device)
            self.last_index = idx  # which samples: the distillation objective's cached targets are by sample
            yield take(self._x, index), self._y[index]


class LoaderShare:
    """A DataLoader's batches in a distributed job: as they come when its sampler is a DistributedSampler
    (each rank loads its own shard; the global batch is every rank's), else this rank's part of each
    batch (every rank loads the same global batch, in the same order given the same seed)."""

    def __init__(self, loader: Any, source: Any, job: distributed.TorchCollective) -> None:
        self._loader, self._source, self._job = loader, source, job
        self._sharded = isinstance(getattr(source, "sampler", None), torch.utils.data.DistributedSampler)
        self.global_count: int | None = None
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Any:
        if self._sharded:
            self._source.sampler.set_epoch(self._epoch)
        self._epoch += 1
        for xb, yb in self._loader:
            if self._sharded:
                self.global_count = distributed.global_count(len(yb), self._job)
                yield xb, yb
                continue
            self.global_count = len(yb)
            part = distributed.share(np.arange(len(yb)), self._job)
            if not len(part):
                raise DataError(f"train_data: a batch of {len(yb)} sample(s) cannot be split over {self._job.size} "
                                "ranks; give the DataLoader a DistributedSampler or larger batches")
            index = torch.from_numpy(part)
            yield take(xb, index), yb[index.to(yb.device)]
