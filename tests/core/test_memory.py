"""glibc heap settings around slimkit's work (``slimkit.memory``), checked on a recording stand-in for
the C library: freed blocks kept for reuse inside, free pages returned and glibc's adaptive ceilings left
after the outermost block, nothing where the C library is not glibc."""

from __future__ import annotations

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


def test_the_outermost_block_sets_and_leaves_the_heap_limits(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(memory, "_libc", lambda: libc)
    with memory.steady_heap():
        assert libc.calls == [("mallopt", -3, memory.KEEP_BLOCK_BYTES), ("mallopt", -1, memory.KEEP_TOP_BYTES)]
        with memory.steady_heap():  # compress() inside a tuning run, export inside compress: one block
            pass
        assert len(libc.calls) == 2
    assert libc.calls[2:] == [("mallopt", -3, memory.AFTER_BLOCK_BYTES), ("mallopt", -1, memory.AFTER_TOP_BYTES),
                              ("trim", 0)]
    with pytest.raises(RuntimeError):  # an error inside still restores
        with memory.steady_heap():
            raise RuntimeError("boom")
    assert libc.calls[-1] == ("trim", 0) and len(libc.calls) == 10


def test_without_glibc_nothing_is_called(monkeypatch):
    monkeypatch.setattr(memory, "_libc", lambda: None)
    with memory.steady_heap():
        pass
    memory.release_unused(memory.LARGE_BYTES)  # collects garbage, trims nothing: no error
