"""Peak resident memory of one measured region, for the benchmarks that run each case in a fresh subprocess.

    with PeakMemory() as mem:
        build()
    mem.extra  # bytes: the resident high-water mark during the region minus the resident size just before it

On Linux the kernel's high-water mark is reset at the start of the region (procfs `clear_refs`), so the figure is
the region's own. Elsewhere (macOS) the mark cannot be reset: `getrusage`'s maximum is the process's, which is the
region's when the region allocates more than the process did before it (each case's warm-up is kept small for
that reason), and `reset` is False in the result so a reader knows which was measured.
"""
from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

import psutil

LINUX = sys.platform.startswith("linux")
PROC = Path("/proc/self")  # Linux's per-process interface (not a file of this machine): status and clear_refs


def _status_bytes(field: str) -> int:
    """A VmXXX field of the process status, in bytes (Linux)."""
    text = (PROC / "status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def high_water_mark() -> int:
    """The process's peak resident size in bytes (getrusage reports KiB on Linux, bytes on macOS)."""
    if LINUX:
        return _status_bytes("VmHWM")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Context manager: `extra` = peak resident bytes during the block minus resident bytes when it began."""

    reset = LINUX

    def __enter__(self) -> "PeakMemory":
        if LINUX:
            (PROC / "clear_refs").write_text("5")  # the high-water mark restarts from the current resident size
        self.before = psutil.Process().memory_info().rss
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = high_water_mark()

    @property
    def extra(self) -> int:
        return self.peak - self.before
