"""glibc heap settings around slimkit's work (``slimkit.memory``), checked on a recording stand-in for
the C library: freed blocks kept for reuse inside, free pages returned and glibc's adaptive ceilings left
after the outermost block, nothing where the C library is not glibc."""

from __future__ import annotations

import time

import pytest

from slimkit import memory


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))
        return 1


def _trimmed(libc, seconds: float = 5.0) -> bool:
    """Waits up to ``seconds`` for the delayed trim to reach ``libc``."""
    deadline = time.monotonic() + seconds
    while ("trim", 0) not in libc.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    return ("trim", 0) in libc.calls


def test_the_outermost_block_sets_and_leaves_the_heap_limits(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(memory, "_libc", lambda: libc)
    monkeypatch.setattr(memory, "TRIM_DELAY_SECONDS", 0.05)
    with memory.steady_heap():
        assert libc.calls == [("mallopt", -3, memory.KEEP_BLOCK_BYTES), ("mallopt", -1, memory.KEEP_TOP_BYTES)]
        with memory.steady_heap():  # compress() inside a tuning run, export inside compress: one block
            pass
        assert len(libc.calls) == 2
    assert libc.calls[2:] == [("mallopt", -3, memory.AFTER_BLOCK_BYTES), ("mallopt", -1, memory.AFTER_TOP_BYTES)]
    assert _trimmed(libc) and len(libc.calls) == 5  # the free pages go back once the delay has passed
    with pytest.raises(RuntimeError):  # an error inside still restores
        with memory.steady_heap():
            raise RuntimeError("boom")
    assert libc.calls[5:] == [("mallopt", -3, memory.KEEP_BLOCK_BYTES), ("mallopt", -1, memory.KEEP_TOP_BYTES),
                              ("mallopt", -3, memory.AFTER_BLOCK_BYTES), ("mallopt", -1, memory.AFTER_TOP_BYTES)]
    libc.calls.clear()
    assert _trimmed(libc) and libc.calls == [("trim", 0)]


def test_a_block_soon_after_another_reuses_its_free_pages(monkeypatch):
    """An export right after its compress: the first block's delayed trim is cancelled by the second,
    whose own end trims once."""
    libc = FakeLibc()
    monkeypatch.setattr(memory, "_libc", lambda: libc)
    monkeypatch.setattr(memory, "TRIM_DELAY_SECONDS", 0.3)
    with memory.steady_heap():
        pass
    with memory.steady_heap():  # within the delay
        time.sleep(0.5)  # past the first block's delay: its trim was cancelled, not run
        assert ("trim", 0) not in libc.calls
    assert _trimmed(libc) and libc.calls.count(("trim", 0)) == 1
    time.sleep(0.4)
    assert libc.calls.count(("trim", 0)) == 1


def test_without_glibc_nothing_is_called(monkeypatch):
    monkeypatch.setattr(memory, "_libc", lambda: None)
    with memory.steady_heap():
        pass
    memory.release_unused(memory.LARGE_BYTES)  # collects garbage, trims nothing: no error


def test_older_garbage_goes_first_older_objects_are_frozen_and_the_runs_own_cycles_freed(monkeypatch):
    import gc
    import weakref

    monkeypatch.setattr(memory, "_libc", lambda: None)
    monkeypatch.setattr(memory, "_last_entry_collect", -float("inf"))  # no block collected recently

    class Node:
        pass

    def cycle() -> weakref.ref:
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    enabled = gc.isenabled()
    gc.disable()  # no automatic collection between making the old cycle and the block
    try:
        _check_freeze(gc, cycle)
    finally:
        if enabled:
            gc.enable()


def _check_freeze(gc, cycle) -> None:
    before = gc.get_freeze_count()
    old = cycle()  # garbage made before the block: collected as the block starts, never frozen
    kept = [cycle]  # a live object older than the block: frozen
    with memory.steady_heap():
        assert old() is None and gc.get_freeze_count() > before
        assert not any(o is kept for o in gc.get_objects())  # frozen: no collection looks at it
        with memory.steady_heap():  # nested: one freeze
            pass
        assert gc.get_freeze_count() > before
        new = cycle()
        gc.collect()
        assert new() is None  # the run's own garbage is freed inside
    assert gc.get_freeze_count() == before and any(o is kept for o in gc.get_objects())
    # the next block within ENTRY_COLLECT_SECONDS (an export after its compress) freezes without collecting
    old = cycle()
    with memory.steady_heap():
        assert old() is not None
    gc.collect()
    assert old() is None


def test_a_process_that_froze_objects_itself_keeps_them_frozen(monkeypatch):
    import gc

    monkeypatch.setattr(memory, "_libc", lambda: None)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with memory.steady_heap():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen  # not unfrozen by slimkit
    finally:
        gc.unfreeze()
