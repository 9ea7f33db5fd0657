"""Counters that several processes add up: one memory-mapped file of int64 slots per writing process.

A process writes only its own file, with plain stores into shared memory (no lock across processes,
no system call, no message per update); a reader sums the files of every process, the ones that
have exited included, so totals never go backwards when a worker is replaced. prometheus-client's
multiprocess mode keeps ``/metrics`` the same way; these slots are exact integers instead of floats.
"""

from __future__ import annotations

import mmap
import os
from array import array
from pathlib import Path


class CounterFile:
    """``slots`` int64 counters in ``path``, created (zeroed) or reopened, mapped for this process."""

    def __init__(self, path: Path, slots: int) -> None:
        self.path = path
        size = slots * 8
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.slots = memoryview(self._map).cast("q")
        """The counters; index and assign like a list of ints (aligned 8-byte stores)."""

    def close(self) -> None:
        self.slots.release()
        self._map.close()


def read_counters(path: Path, slots: int) -> array[int]:
    """A copy of another process's counters (zeros past the end of a short file)."""
    values = array("q")
    try:
        data = path.read_bytes()[: slots * 8]
    except OSError:
        data = b""
    values.frombytes(data[: len(data) - len(data) % 8])
    values.extend([0] * (slots - len(values)))
    return values
