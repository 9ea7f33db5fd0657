"""Spectral analysis jobs: off the request path, off the serving cores' critical path, watchable, and
shared by every process on the machine.

A job is the set of weight matrices of a model version still to analyse, identified by their cache
keys; two versions with the same weights are the same job. Asking for a version's weights view
submits its job (or joins it, when it is already known). Each process runs jobs with a few
scheduler threads (``analysis_workers``), each driving its own analysis process (lower CPU priority,
``analysis_threads`` BLAS threads). Before computing a matrix a thread takes one of
``analysis_workers`` machine-wide slots, then the matrix's own lock in the cache folder, then looks
again whether someone finished it meanwhile: so the machine never runs more analyses at once than
the setting says, and no matrix is computed twice, whichever worker process or server asked.

Progress is read from the cache folder, so every process answers the same: a matrix is ``done``
when its entry is there, ``running`` while someone holds its lock, ``queued`` otherwise. A job's
start (and end) time lives in a small state file there; the time left is estimated from the work
left (multiply-adds) and the rate measured on this machine.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.settings import WeightSettings
from service.weights.analysis_process import AnalysisCrashed, AnalysisProcess
from service.weights.analysis_task import AnalysisTask, run_task
from service.weights.disk_cache import DiskCache, Entry
from service.weights.spectral import SpectralLimits

log = logging.getLogger(__name__)

KIND = "spectral"
_IDLE_S = 30.0
"""A scheduler thread (and its analysis process) with nothing to do for this long goes away."""
_POLL_S = 0.25
"""How often a thread looks again while the only work left is running elsewhere."""
_RATE_STATE = "rate"
_MIN_RATED_WORK = 1e7
_RECENT = 4096


@dataclass(eq=False)
class _Job:
    id: str
    label: str
    tasks: dict[str, AnalysisTask]
    attempted: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)


class Analyzer:
    """The process's part of the machine-wide analysis pool (thread-safe)."""

    def __init__(self, cache: DiskCache, options: WeightSettings, measure: bool = False) -> None:
        self.cache = cache
        self.options = options
        self.limits = SpectralLimits(options.spectral_max_m, options.spectral_max_n)
        self._measure = measure
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._failed: OrderedDict[str, str] = OrderedDict()
        self._claimed: set[str] = set()
        self._timings: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._threads: list[threading.Thread] = []
        self._processes: set[AnalysisProcess] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._rate: float | None = None
        self._rate_written = 0.0

    # ------------------------------------------------------------------ results

    def _remember(self, key: str, entry: Entry) -> None:
        if self.cache.enabled:  # eigenvalues are read from disk when asked for: memory holds documents
            entry = Entry(entry.doc)
        with self._lock:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self.options.cache_entries:
                self._memory.popitem(last=False)

    def entry(self, key: str) -> Entry | None:
        """The analysis of ``key`` if any process has finished it."""
        with self._lock:
            found = self._memory.get(key)
            if found is not None:
                self._memory.move_to_end(key)
                return found
        found = self.cache.get(KIND, key, count=False)  # progress polls are not misses
        if found is not None:
            self.cache.counters.add(KIND, "hits")
            self._remember(key, found)
        return found

    def eigenvalues(self, key: str) -> np.ndarray | None:
        """The eigenvalues behind a finished analysis, or None (not finished, or the entry is gone,
        in which case the analysis counts as not done again)."""
        with self._lock:
            found = self._memory.get(key)
        if found is None or "evals" not in found.arrays:
            found = self.cache.get(KIND, key) if self.cache.enabled else None
            if found is None:
                with self._lock:
                    self._memory.pop(key, None)
                return None
        evals = found.arrays.get("evals")
        return None if evals is None else np.asarray(evals)

    def compute_now(self, task: AnalysisTask) -> Entry:
        """Analyse a small matrix in the calling thread (still once per machine)."""

        def compute() -> Entry:
            result = run_task(task, self.limits)
            return _entry(result.doc, result.evals)

        entry = self.cache.get_or_compute(KIND, task.key, compute)
        self._remember(task.key, entry)
        return entry

    def state(self, key: str) -> tuple[str, dict[str, Any] | None]:
        """``done``, ``running`` (with who and since when), ``failed`` (with why) or ``queued``."""
        if self.entry(key) is not None:
            return "done", None
        with self._lock:
            reason = self._failed.get(key)
        if reason is not None:
            return "failed", {"reason": reason}
        holder = self.cache.running(key)
        if holder is not None:
            return "running", holder
        return "queued", None

    def timing(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._timings.get(key)

    # ------------------------------------------------------------------ jobs

    def submit(self, job_id: str, label: str, tasks: list[AnalysisTask]) -> None:
        """Start the job, or join it: a job already running here keeps its place in the queue."""
        if self._stop.is_set():
            return
        self._job_started(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:  # a new run: what failed in an earlier one is tried again
                self._jobs[job_id] = _Job(job_id, label, {t.key: t for t in tasks})
                for task in tasks:
                    self._failed.pop(task.key, None)
                self._restart_if_finished(job_id)
            else:  # an entry that went missing since (evicted, found corrupt) is done again
                job.attempted = {
                    k for k in job.attempted if k in job.failed or k in self._memory or self.cache.contains(k)
                }
            self._ensure_threads()
            self._wake.notify_all()

    def _ensure_threads(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.options.analysis_workers:
            thread = threading.Thread(target=self._run, name=f"weights-analysis-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        """Stop every thread; an analysis in progress is abandoned (its lock goes with its process)."""
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
            threads = list(self._threads)
            processes = list(self._processes)
        for process in processes:
            process.close(now=True)
        for thread in threads:
            thread.join(timeout=10)

    def _threads_for_blas(self) -> int:
        if self.options.analysis_threads:
            return self.options.analysis_threads
        return max(1, len(os.sched_getaffinity(0)) // max(self.options.analysis_workers, 1))

    def _run(self) -> None:
        process = AnalysisProcess(self._threads_for_blas(), self.options.analysis_nice, self._measure)
        with self._lock:
            self._processes.add(process)
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                claimed = self._claim()
                if claimed is None:
                    with self._lock:
                        pending = any(len(job.attempted) < len(job.tasks) for job in self._jobs.values())
                        if not pending and time.monotonic() - idle_since > _IDLE_S:
                            # leave the list in the same breath, so a submit that follows starts a thread
                            self._threads.remove(threading.current_thread())
                            return
                        self._wake.wait(_POLL_S if pending else _IDLE_S)
                    continue
                job, task = claimed
                try:
                    self._analyse(job, task, process)
                except Exception as exc:  # the thread must outlive any one matrix
                    log.exception("spectral analysis of %s in %s failed", task.name, job.label)
                    self._fail(job, task.key, f"{type(exc).__name__}: {exc}")
                finally:
                    with self._lock:
                        self._claimed.discard(task.key)
                idle_since = time.monotonic()
        finally:
            with self._lock:
                self._processes.discard(process)
            process.close(now=self._stop.is_set())

    def _claim(self) -> tuple[_Job, AnalysisTask] | None:
        """The next matrix to analyse: first job first, in graph order; matrices running elsewhere
        wait their turn (their lock says so)."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            for key, task in job.tasks.items():
                with self._lock:
                    if key in job.attempted or key in self._claimed:
                        continue
                if self.entry(key) is not None:
                    with self._lock:
                        job.attempted.add(key)
                    continue
                if self.cache.running(key) is not None:
                    continue
                with self._lock:
                    if key in self._claimed:
                        continue
                    self._claimed.add(key)
                return job, task
            with self._lock:
                if len(job.attempted) >= len(job.tasks) and self._jobs.get(job.id) is job:
                    del self._jobs[job.id]
        return None

    def _analyse(self, job: _Job, task: AnalysisTask, process: AnalysisProcess) -> None:
        with self.cache.slot(self.options.analysis_workers, self._stop) as slot:
            if not slot:
                return
            with self.cache.lock(task.key, blocking=False) as mine:
                if not mine:
                    return  # another process took it between our look and our lock
                if self.cache.get(KIND, task.key, count=False) is not None:
                    with self._lock:
                        job.attempted.add(task.key)
                    return
                try:
                    result = process.run(task, self.limits)
                except AnalysisCrashed as exc:
                    if not self._stop.is_set():
                        log.warning("spectral analysis of %s in %s failed: %s", task.name, job.label, exc)
                        self._fail(job, task.key, str(exc))
                    return
                # the timing and the count go in before the entry is visible: a watcher that sees
                # the matrix done must also see how long it took here, and that it was computed
                with self._lock:
                    self._timings[task.key] = {"seconds": result.seconds, "peak_bytes": result.peak_bytes,
                                               "process": process.pid}
                    _trim(self._timings)
                self.cache.counters.add(KIND, "computed")
                entry = _entry(result.doc, result.evals)
                self.cache.put(KIND, task.key, entry.doc, entry.arrays)
        self._remember(task.key, entry)
        with self._lock:
            job.attempted.add(task.key)
            complete = len(job.attempted) >= len(job.tasks)
        self._learn_rate(task.work, result.seconds)
        if complete and all(self.entry(key) is not None or key in job.failed for key in job.tasks):
            self._state_once(f"job-{job.id}-end", "finished_at", time.time())  # the moment, not a watcher's

    def _fail(self, job: _Job, key: str, reason: str) -> None:
        with self._lock:
            job.attempted.add(key)
            job.failed[key] = reason
            self._failed[key] = reason
            _trim(self._failed)

    def failed(self, key: str) -> bool:
        """Whether this process's analysis of ``key`` failed (it is not retried until a new run)."""
        with self._lock:
            return key in self._failed

    # ------------------------------------------------------------------ progress

    def _learn_rate(self, work: float, seconds: float) -> None:
        """Smooth the machine's analysis rate with this measurement (shared, written once a second)."""
        if work < _MIN_RATED_WORK or seconds <= 0:
            return
        measured = work / seconds
        known = self._rate if self._rate is not None else self.rate()
        self._rate = measured if known is None else 0.5 * known + 0.5 * measured
        if time.monotonic() - self._rate_written >= 1.0:
            self._rate_written = time.monotonic()
            self.cache.write_state(_RATE_STATE, {"work_per_s": self._rate})

    def rate(self) -> float | None:
        """Multiply-adds per second an analysis runs at on this machine (measured, smoothed)."""
        known = (self.cache.read_state(_RATE_STATE) or {}).get("work_per_s")
        return float(known) if isinstance(known, int | float) and known > 0 else None

    def _state_once(self, name: str, field: str, value: float) -> float:
        """A time the first process to get here records and every process then reads."""
        self.cache.write_state(name, {field: value}, exclusive=True)
        recorded = (self.cache.read_state(name) or {}).get(field)
        return float(recorded) if isinstance(recorded, int | float) else value

    def _job_started(self, job_id: str) -> float:
        return self._state_once(f"job-{job_id}", "started_at", time.time())

    def _job_times(self, job_id: str, finished: bool) -> tuple[float, float | None]:
        """When the job started and, once every matrix is done, when it finished. A job that had
        finished and now has matrices to do again (entries evicted or found corrupt) starts anew."""
        if finished:
            return self._job_started(job_id), self._state_once(f"job-{job_id}-end", "finished_at", time.time())
        self._restart_if_finished(job_id)
        return self._job_started(job_id), None

    def _restart_if_finished(self, job_id: str) -> None:
        """A job recorded as finished with matrices to do again (entries evicted or found corrupt)
        starts a new run."""
        end = f"job-{job_id}-end"
        if self.cache.read_state(end) is not None:
            self.cache.remove_state(end)
            self.cache.write_state(f"job-{job_id}", {"started_at": time.time()})

    def job_status(self, job_id: str, tasks: list[AnalysisTask], done_keys: set[str]) -> dict[str, Any]:
        """Where a job stands, the same from every process: per matrix state, counts, work, time."""
        now = time.time()
        rate = self.rate()
        counts = {"done": len(done_keys), "running": 0, "queued": 0, "failed": 0}
        work_total = sum(t.work for t in tasks)
        work_done = 0.0
        work_left = 0.0
        states: dict[str, str] = {key: "done" for key in done_keys}
        for task in tasks:
            state, info = self.state(task.key)
            states[task.key] = state
            counts[state] += 1
            if state in ("done", "failed"):
                work_done += task.work
            elif state == "running" and rate and info and isinstance(info.get("started_at"), int | float):
                part = min(task.work * 0.95, max(now - float(info["started_at"]), 0.0) * rate)
                work_done += part
                work_left += task.work - part
            else:
                work_left += task.work
        total = counts["done"] + counts["running"] + counts["queued"] + counts["failed"]
        finished = counts["running"] == counts["queued"] == 0
        started, finished_at = self._job_times(job_id, finished)
        ended = finished_at if finished_at is not None else now
        with self._lock:
            here = job_id in self._jobs
        state = "done" if finished else "running" if counts["running"] or here else "queued"
        return {
            "id": job_id,
            "state": state,
            "layers": counts | {"total": total},
            "work": {"done": work_done, "total": work_total, "unit": "multiply-adds"},
            "progress": work_done / work_total if work_total else 1.0,
            "started_at": started,
            "finished_at": finished_at,
            "elapsed_s": max(ended - started, 0.0),
            "eta_s": 0.0 if finished else (work_left / rate if rate else None),
            "rate_work_per_s": rate,
            "states": states,
        }


def _entry(doc: dict[str, Any], evals: np.ndarray | None) -> Entry:
    return Entry(doc, {"evals": evals} if evals is not None else {})


def _trim(items: OrderedDict[str, Any]) -> None:
    while len(items) > _RECENT:
        items.popitem(last=False)

