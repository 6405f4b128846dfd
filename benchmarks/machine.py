"""What every benchmark records about the machine, and how it hands back its table."""

from __future__ import annotations

import os
import platform
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
