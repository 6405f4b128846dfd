"""Core's side of a distributed job on a job of threads: observers merged across ranks, the writer rank's
files, averaged scores. Each rank is a thread holding a :class:`ThreadCollective`; the engines' own
collectives are tested over real processes in tests/adapters/test_distributed_*.py."""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import pytest

from slimkit.adapter.collective import LOCAL, Collective, DistributedError, mean_over_ranks, on_writer
from slimkit.quant.observers import make_observer

_REDUCE = {"sum": np.sum, "min": np.min, "max": np.max}


class _Room:
    """Where the threads of one job meet for each collective."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=10)
        self.slots: list[Any] = [None] * size


class ThreadCollective(Collective):
    def __init__(self, room: _Room, rank: int) -> None:
        self.room, self.rank, self.size = room, rank, room.size

    def _exchange(self, value: np.ndarray) -> list[np.ndarray]:
        self.room.slots[self.rank] = np.asarray(value)
        self.room.barrier.wait()
        values = list(self.room.slots)
        self.room.barrier.wait()  # nobody overwrites a slot before everyone read them
        return values

    def all_reduce(self, value: np.ndarray, op: str, what: str) -> np.ndarray:
        return _REDUCE[op](np.stack(self._exchange(value)), axis=0).astype(np.asarray(value).dtype)

    def broadcast(self, value: np.ndarray, what: str) -> np.ndarray:
        return self._exchange(value)[0]


def run_ranks(size: int, work: Callable[[Collective], Any]) -> list[Any]:
    """``work(collective)`` on ``size`` threads; each one's result or the exception it raised."""
    room = _Room(size)
    results: list[Any] = [None] * size

    def one(rank: int) -> None:
        try:
            results[rank] = work(ThreadCollective(room, rank))
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            results[rank] = exc

    threads = [threading.Thread(target=one, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.5, 1.0, (64, 32)), rng.standard_cauchy((8, 32))]).astype(np.float32)


def _observed(name: str, parts: list[np.ndarray], **kwargs: Any) -> Any:
    obs = make_observer(name, **kwargs)
    for part in parts:
        obs.update(part)
    return obs


def test_min_max_merged_over_ranks_is_exactly_the_whole_data_range() -> None:
    x = _data()
    single = _observed("minmax", [x[:24], x[24:]]).range()
    halves = np.array_split(x, 2)

    def rank(coll: Collective) -> Any:
        obs = _observed("minmax", [halves[coll.rank]])
        obs.merge(coll, "calibration")
        return obs.range()

    for lo, hi in run_ranks(2, rank):
        assert float(lo) == float(single[0]) and float(hi) == float(single[1])


@pytest.mark.parametrize("name", ["percentile", "entropy", "mse"])
def test_histograms_merged_over_ranks_are_within_one_bin_of_one_process(name: str) -> None:
    x = _data(1)
    single = _observed(name, [x[i:i + 16] for i in range(0, len(x), 16)])  # one process, batch by batch
    parts = np.array_split(x, 3)

    def rank(coll: Collective) -> Any:
        obs = _observed(name, [parts[coll.rank][i:i + 16] for i in range(0, len(parts[coll.rank]), 16)])
        obs.merge(coll, "calibration")
        return obs

    merged = run_ranks(3, rank)
    width = (single.hi - single.lo) / single.bins
    for obs in merged:
        assert obs.total == pytest.approx(single.total) == np.isfinite(x).sum()
        assert (obs.lo, obs.hi) == pytest.approx((single.lo, single.hi))
        lo, hi = obs.range()
        assert abs(float(hi) - float(single.range()[1])) <= width
        assert abs(float(lo) - float(single.range()[0])) <= width
    assert all(np.array_equal(merged[0].counts, m.counts) for m in merged[1:])  # every rank alike


def test_a_rank_that_saw_no_data_contributes_nothing() -> None:
    x = _data(2)

    def rank(coll: Collective) -> Any:
        obs = _observed("percentile", [x] if coll.rank == 0 else [])
        obs.merge(coll, "calibration")
        return obs.range(), obs.total

    (r0, t0), (r1, t1) = run_ranks(2, rank)
    assert t0 == t1 == np.isfinite(x).sum() and np.allclose(r0, r1)


def test_only_the_writer_writes_and_every_rank_returns_after_it(tmp_path) -> None:
    target = tmp_path / "report.json"
    seen_after: dict[int, bool] = {}

    def rank(coll: Collective) -> Any:
        out = on_writer(coll, "report.json", lambda: target.write_text(f"rank {coll.rank}"))
        seen_after[coll.rank] = target.exists()
        return out

    results = run_ranks(3, rank)
    assert target.read_text() == "rank 0"
    assert results[1] is None and results[2] is None and results[0] == len("rank 0")
    assert seen_after == {0: True, 1: True, 2: True}


def test_a_writer_that_fails_stops_the_others_with_an_error_naming_it(tmp_path) -> None:
    def rank(coll: Collective) -> Any:
        def write() -> None:
            raise OSError("disk full")
        return on_writer(coll, "model.onnx", write)

    results = run_ranks(2, rank)
    assert isinstance(results[0], OSError)
    assert isinstance(results[1], DistributedError)
    assert "model.onnx: rank 0" in str(results[1]) and "failed to write it" in str(results[1])


def test_scores_are_averaged_so_every_rank_decides_alike() -> None:
    def rank(coll: Collective) -> Any:
        mine = [np.full(3, float(coll.rank)), np.arange(4.0) * (coll.rank + 1)]
        return mean_over_ranks(mine, "channel scores", coll), coll.agree(mine, "check")

    (a, agree_a), (b, agree_b) = run_ranks(2, rank)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    np.testing.assert_allclose(a[0], 0.5)
    np.testing.assert_allclose(a[1], np.arange(4.0) * 1.5)
    assert not agree_a and not agree_b  # the ranks' own lists differ, and each one knows it


def test_one_process_is_a_job_of_one() -> None:
    assert LOCAL.size == 1 and LOCAL.is_writer
    value = np.arange(3.0)
    assert LOCAL.all_reduce(value, "max", "x") is not None
    np.testing.assert_array_equal(LOCAL.all_reduce(value, "sum", "x"), value)
    assert mean_over_ranks([value], "x") == [value]
    with pytest.raises(ValueError, match="unknown reduction 'prod'"):
        LOCAL.all_reduce(value, "prod", "x")
