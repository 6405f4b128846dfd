"""What every benchmark records about the machine, and how it hands back its table."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cpu() -> str:
    """The CPU model and core count (``/proc/cpuinfo`` where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def emit(text: str, out: Path | None) -> int:
    """Prints the table and writes it to ``out`` when given; the exit status."""
    print(text)
    if out:
        out.write_text(text)
    return 0


class OtherLoad:
    """CPU other processes used since construction, in cores: whether a timing shared the machine.

    This process and its waited-for children are left out (``os.times``), so a benchmark's own worker
    processes do not count; ``cores()`` is None where ``/proc/stat`` cannot be read."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        t = os.times()
        return ((user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
                t.user + t.system + t.children_user + t.children_system, time.perf_counter())

    def cores(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None or end[2] <= self.start[2]:
            return None
        total, mine, wall = (e - s for e, s in zip(end, self.start))
        return max(0.0, (total - mine) / wall)
