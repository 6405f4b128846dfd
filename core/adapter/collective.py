"""The collective capability: how core talks to the other processes of a distributed job, in numpy.

slimkit writes no distribution layer of its own. An adapter that finds its framework's engine running
(an initialised ``torch.distributed`` process group, a ``tf.distribute`` strategy over several workers)
answers :meth:`ModelAdapter.collective` with an implementation over that engine; every other run gets
:data:`LOCAL`, a job of one. Core uses it for what only core knows about: merging calibration statistics
(:meth:`all_reduce`), keeping data-dependent decisions identical on every rank, and letting one process
(:attr:`is_writer`) write the files.

Collectives must be called by every rank in the same order; a rank that fails or stops makes the others'
next call raise :class:`DistributedError` within the collective timeout, never hang.
"""

from __future__ import annotations

import abc
import hashlib
from typing import Callable, Iterable, TypeVar

import numpy as np

from slimkit.errors import SlimkitError

T = TypeVar("T")

#: reductions :meth:`Collective.all_reduce` accepts.
REDUCE_OPS = ("sum", "min", "max")


class DistributedError(SlimkitError, RuntimeError):
    """A collective of a distributed job failed: a rank raised, stopped, or did not answer in time; the
    message names the rank and what it was doing."""


class Collective(abc.ABC):
    """The ranks of one job, as core sees them: numpy in, numpy out."""

    #: this process's rank, 0-based.
    rank: int = 0
    #: number of ranks (processes, or workers for tf.distribute's multi-worker strategy).
    size: int = 1

    @property
    def is_writer(self) -> bool:
        """True on the one rank that writes files (rank 0, the chief)."""
        return self.rank == 0

    @abc.abstractmethod
    def all_reduce(self, value: np.ndarray, op: str, what: str) -> np.ndarray:
        """``value`` (same shape and dtype on every rank) reduced over the ranks with ``op`` (one of
        :data:`REDUCE_OPS`); ``what`` names the feature for error messages.

        Raises:
            DistributedError: another rank failed or did not answer within the timeout.
        """

    @abc.abstractmethod
    def broadcast(self, value: np.ndarray, what: str) -> np.ndarray:
        """The writer's ``value`` on every rank (same shape and dtype everywhere)."""

    def announce(self, exc: BaseException) -> None:
        """Tells the other ranks, where the engine allows, that this rank failed with ``exc`` (so their
        DistributedError names it); compress calls it with any error leaving this rank's run."""

    def agree(self, arrays: Iterable[np.ndarray], what: str) -> bool:
        """True when every rank holds the same ``arrays`` (a digest compared across ranks)."""
        digest = hashlib.sha256()
        for a in arrays:
            a = np.ascontiguousarray(a)
            digest.update(str((a.shape, a.dtype.str)).encode())
            digest.update(a.tobytes())
        words = np.frombuffer(digest.digest()[:16], dtype=np.int32).astype(np.float64)
        return bool(np.array_equal(self.all_reduce(words, "min", what), self.all_reduce(words, "max", what)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class Local(Collective):
    """A job of one process: every collective returns its input."""

    def all_reduce(self, value: np.ndarray, op: str, what: str) -> np.ndarray:
        if op not in REDUCE_OPS:
            raise ValueError(f"{what}: unknown reduction {op!r}; expected one of {', '.join(REDUCE_OPS)}")
        return np.asarray(value)

    def broadcast(self, value: np.ndarray, what: str) -> np.ndarray:
        return np.asarray(value)

    def agree(self, arrays: Iterable[np.ndarray], what: str) -> bool:
        return True


#: the collective of every single-process run.
LOCAL = Local()


_current: list[Collective] = [LOCAL]


def current() -> Collective:
    """The collective of the :func:`slimkit.compress` call running now (:data:`LOCAL` outside one)."""
    return _current[-1]


class joined:
    """Context in which :func:`current` is ``collective`` (compress enters it for its whole run)."""

    def __init__(self, collective: Collective) -> None:
        self._collective = collective

    def __enter__(self) -> Collective:
        _current.append(self._collective)
        return self._collective

    def __exit__(self, *exc: object) -> None:
        _current.pop()


def mean_over_ranks(arrays: list[np.ndarray], what: str, collective: Collective | None = None) -> list[np.ndarray]:
    """Each array averaged over the ranks (one all-reduce for all of them): statistics every rank
    measured on its own share of the data (activation means, gradients) made one, so that decisions
    taken from them are the same on every rank."""
    coll = collective or current()
    if coll.size <= 1 or not arrays:
        return arrays
    flat = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    total = coll.all_reduce(flat, "sum", what) / coll.size
    out, at = [], 0
    for a in arrays:
        n = int(np.size(a))
        out.append(total[at:at + n].reshape(np.shape(a)).astype(np.asarray(a).dtype, copy=False))
        at += n
    return out


def on_writer(collective: Collective | None, what: str, write: Callable[[], T]) -> T | None:
    """Runs ``write`` on the writer rank only, and returns on every rank once it finished: the writer
    gets ``write()``'s result, the others None. A writer that fails raises its own error there and makes
    the others raise DistributedError naming it, instead of waiting for a file that never comes.

    Args:
        collective: the job (None or a job of one: ``write()`` runs here).
        what: the file, for messages (``report.json``).
        write: writes the file.
    """
    if collective is None or collective.size <= 1:
        return write()
    result: T | None = None
    failed = None
    if collective.is_writer:
        try:
            result = write()
        except BaseException as exc:  # the others learn of it before the error goes up here
            failed = exc
    status = collective.all_reduce(np.array([0.0 if failed is None else 1.0]), "max", f"writing {what}")
    if failed is not None:
        raise failed
    if status[0] > 0:
        raise DistributedError(f"{what}: rank 0, the rank that writes the job's files, failed to write it "
                               f"(its own error says why); rank {collective.rank} wrote nothing")
    return result
