"""Inference statistics in the shape of Triton's statistics extension, one set of numbers per server.

Each worker process counts into its own memory-mapped file per model version (``ops.counters``):
recording a request is eight integer additions in shared memory, as cheap as the plain attributes it
replaces, with no message to any other process. Answering
``/v2/models/stats`` sums the files of every worker, past ones included, so whichever worker answers
gives the same totals. The counters of a version keep counting across reloads of that version.

File layout (int64 slots): the request counters (count and nanoseconds of success, fail, queue,
compute_input, compute_infer, compute_output; of the last four only the nanoseconds are written), the
inference and execution counts and the last inference time, then an open-addressing table of (batch
size + 1, executions, nanoseconds).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from service.ops.counters import CounterFile, read_counters

_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
_SUCCESS, _FAIL, _QUEUE, _INPUT, _INFER, _OUTPUT = (2 * i for i in range(len(_DURATIONS)))
_INFERENCES = 12
_EXECUTIONS = 13
_LAST_MS = 14
_HEADER = 16
_BATCH_ENTRIES = 1024
"""Distinct batch sizes tracked per version and process (later new sizes count only in execution_count)."""
SLOTS = _HEADER + 3 * _BATCH_ENTRIES


class InferenceStats:
    """This process's counters for one model version.

    Updated on the event loop's thread only (the batcher reports each execution there, after the run),
    so an addition needs no lock. A successful request's queue, compute_input, compute_infer and
    compute_output counts are its success count: only their nanoseconds are written per request, and
    `StatsBook.as_json` reads the counts from the success slot."""

    def __init__(self, counters: CounterFile) -> None:
        self._file = counters
        self._slots = counters.slots
        self._batch_base: dict[int, int | None] = {}

    def record_execution(self, rows: int, compute_ns: int) -> None:
        """One model execution of ``rows`` samples (a batch, or a single request)."""
        slots = self._slots
        slots[_EXECUTIONS] += 1
        base = self._batch_base.get(rows, -1)
        if base == -1:
            base = self._batch_base[rows] = self._find_batch_entry(rows)
        if base is not None:
            slots[base + 1] += 1
            slots[base + 2] += compute_ns

    def record_success(
        self, rows: int, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        slots = self._slots
        slots[_SUCCESS] += 1
        slots[_SUCCESS + 1] += total_ns
        slots[_QUEUE + 1] += queue_ns
        slots[_INPUT + 1] += input_ns
        slots[_INFER + 1] += infer_ns
        slots[_OUTPUT + 1] += output_ns
        slots[_INFERENCES] += rows
        slots[_LAST_MS] = time.time_ns() // 1_000_000

    def record_failure(self, total_ns: int) -> None:
        slots = self._slots
        slots[_FAIL] += 1
        slots[_FAIL + 1] += total_ns
        slots[_LAST_MS] = time.time_ns() // 1_000_000

    def _find_batch_entry(self, rows: int) -> int | None:
        """The slot of ``rows`` in the batch table, claimed if new; None when the table is full."""
        slots = self._slots
        tag = rows + 1  # 0 marks a free entry, and a batch may have 0 rows
        for probe in range(_BATCH_ENTRIES):
            base = _HEADER + 3 * ((rows + probe) % _BATCH_ENTRIES)
            if slots[base] == tag:
                return base
            if slots[base] == 0:
                slots[base] = tag
                return base
        return None

    def close(self) -> None:
        self._slots = memoryview(bytearray(SLOTS * 8)).cast("q")  # late updates land nowhere
        self._file.close()


class StatsBook:
    """Every version's counters under ``directory``: this process writes its own file per version and
    reads the sum over all processes' files. Created and closed by the app's lifespan."""

    def __init__(self, directory: Path, writer: str) -> None:
        self._directory = directory
        self._writer = writer
        self._open: dict[tuple[str, int], InferenceStats] = {}

    def for_version(self, name: str, version: int) -> InferenceStats:
        """This process's counters of one version (the same object across reloads of it)."""
        key = (name, version)
        stats = self._open.get(key)
        if stats is None:
            path = self._directory / name / str(version) / f"{self._writer}.stats"
            stats = self._open[key] = InferenceStats(CounterFile(path, SLOTS))
        return stats

    def as_json(self, name: str, version: int) -> dict[str, Any]:
        """Triton's ``model_stat`` for one version, summed over every worker process."""
        totals = [0] * _HEADER
        last_ms = 0
        batches: dict[int, list[int]] = {}
        folder = self._directory / name / str(version)
        for path in sorted(folder.glob("*.stats")) if folder.is_dir() else []:
            values = read_counters(path, SLOTS)
            for slot in range(_HEADER):
                totals[slot] += values[slot]
            last_ms = max(last_ms, values[_LAST_MS])
            tags = values[_HEADER::3]
            for position in (i for i, tag in enumerate(tags) if tag):
                base = _HEADER + 3 * position
                entry = batches.setdefault(tags[position] - 1, [0, 0])
                entry[0] += values[base + 1]
                entry[1] += values[base + 2]
        zero = {"count": 0, "ns": 0}
        counts = {key: totals[_FAIL if key == "fail" else _SUCCESS] for key in _DURATIONS}
        stats = {key: {"count": counts[key], "ns": totals[2 * i + 1]} for i, key in enumerate(_DURATIONS)}
        return {
            "name": name,
            "version": str(version),
            "last_inference": last_ms,
            "inference_count": totals[_INFERENCES],
            "execution_count": totals[_EXECUTIONS],
            "inference_stats": stats | {"cache_hit": zero, "cache_miss": dict(zero)},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": dict(zero),
                    "compute_infer": {"count": count, "ns": ns},
                    "compute_output": dict(zero),
                }
                for size, (count, ns) in sorted(batches.items())
                if count
            ],
        }

    def close(self) -> None:
        for stats in self._open.values():
            stats.close()
        self._open.clear()
