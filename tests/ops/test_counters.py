"""Counter files: one writer per process, every reader sums them, exited writers included."""

from __future__ import annotations

from pathlib import Path

from service.ops.counters import CounterFile, read_counters


def test_a_reader_sees_a_writers_stores_at_once_and_after_it_closed(tmp_path: Path) -> None:
    path = tmp_path / "counts" / "123.stats"
    writer = CounterFile(path, 4)
    writer.slots[0] += 5
    writer.slots[3] = 2**62  # exact integers, far beyond a float's 53 bits
    assert list(read_counters(path, 4)) == [5, 0, 0, 2**62]
    writer.close()
    again = CounterFile(path, 4)  # the same process reopening: it continues from there
    again.slots[0] += 1
    assert list(read_counters(path, 4)) == [6, 0, 0, 2**62]
    again.close()
    assert list(read_counters(tmp_path / "nobody.stats", 3)) == [0, 0, 0]
