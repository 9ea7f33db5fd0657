"""The on-disk weights cache: whole entries or none, corrupt entries recomputed, concurrent writers
and computations across real processes, the size bound, locks that die with their process."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service.weights.disk_cache import DiskCache, Entry, cache_key, default_cache_dir

SPAWN = multiprocessing.get_context("spawn")


def _entry_file(cache: DiskCache, key: str) -> Path:
    assert cache.root is not None
    return cache.root / "entries" / key[:2] / key


def test_entries_round_trip_with_arrays(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 30)
    evals = np.linspace(0.1, 5.0, 17)
    doc = {"alpha": 3.25, "nested": {"x": [1, 2, None]}, "text": "ü"}
    cache.put("spectral", "k1", doc, {"evals": evals})
    entry = cache.get("spectral", "k1")
    assert entry is not None
    assert entry.doc == doc
    np.testing.assert_array_equal(entry.arrays["evals"], evals)
    assert cache.get("spectral", "missing") is None
    assert cache.counters.snapshot()["spectral"] == {"written": 1, "hits": 1, "misses": 1}


def test_keys_digest_everything_that_changes_a_result() -> None:
    assert cache_key("stats", ["abc", [3, 4], "float32", 0, ""]) == cache_key("stats", ["abc", [3, 4], "float32", 0, ""])
    assert cache_key("stats", ["abc", [3, 4], "float32", 0, ""]) != cache_key("stats", ["abc", [4, 3], "float32", 0, ""])
    assert cache_key("stats", ["abc", [3, 4], "float32", 0, ""]) != cache_key("stats", ["abc", [3, 4], "float32", 1, ""])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(b"{\"alpha\": 1.0}")


@pytest.mark.parametrize("damage", [_truncate, _flip, _empty, _garbage])
def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path: Path, damage: object) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 30)
    cache.put("stats", "k", {"mean": 0.5}, {"a": np.arange(10.0)})
    path = _entry_file(cache, "k")
    damage(path)  # type: ignore[operator]
    assert cache.get("stats", "k") is None
    assert not path.exists()
    assert cache.counters.get("stats", "corrupt") == 1
    computed = cache.get_or_compute("stats", "k", lambda: Entry({"mean": 0.5}))
    assert computed.doc == {"mean": 0.5}
    assert cache.counters.get("stats", "computed") == 1
    assert cache.get("stats", "k") is not None


def _writer(folder: str, worker: int, rounds: int) -> None:
    cache = DiskCache(Path(folder), 1 << 30)
    rng = np.random.default_rng(worker)
    for i in range(rounds):
        # every writer writes the same shared keys (same bytes) and keys of its own
        cache.put("x", f"shared{i % 5}", {"i": i % 5}, {"v": np.full(2000, float(i % 5))})
        cache.put("x", f"own{worker}-{i}", {"w": worker}, {"v": rng.normal(size=500)})
        for j in range(5):
            entry = cache.get("x", f"shared{j}")
            assert entry is None or (entry.doc == {"i": j} and float(entry.arrays["v"][0]) == j)


def test_concurrent_writers_in_several_processes_leave_only_whole_entries(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    DiskCache(folder, 1 << 30)
    workers = [SPAWN.Process(target=_writer, args=(str(folder), w, 40)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    cache = DiskCache(folder, 1 << 30)
    for j in range(5):
        entry = cache.get("x", f"shared{j}")
        assert entry is not None
        assert entry.doc == {"i": j}
    for w in range(4):
        for i in range(40):
            assert cache.get("x", f"own{w}-{i}") is not None
    assert cache.counters.get("x", "corrupt") == 0
    assert not list((folder / "v1" / "entries").rglob(".tmp-*"))


def _computer(folder: str, log: str, barrier: threading.Barrier | None) -> None:
    cache = DiskCache(Path(folder), 1 << 30)

    def slow() -> Entry:
        with open(log, "a") as handle:  # one line per computation, from whichever process
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return Entry({"answer": 42})

    assert cache.get_or_compute("stats", "the-key", slow).doc == {"answer": 42}


def test_one_computation_per_key_however_many_processes_ask(tmp_path: Path) -> None:
    folder, log = tmp_path / "c", tmp_path / "computations.log"
    DiskCache(folder, 1 << 30)
    workers = [SPAWN.Process(target=_computer, args=(str(folder), str(log), None)) for _ in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    assert len(log.read_text().splitlines()) == 1


def _hold(folder: str, key: str, ready: object) -> None:
    cache = DiskCache(Path(folder), 1 << 30)
    with cache.lock(key) as got:
        assert got
        ready.set()  # type: ignore[attr-defined]
        time.sleep(120)  # until killed


def test_a_lock_held_by_another_process_shows_as_running_and_dies_with_it(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    cache = DiskCache(folder, 1 << 30)
    ready = SPAWN.Event()
    holder = SPAWN.Process(target=_hold, args=(str(folder), "k", ready))
    holder.start()
    try:
        assert ready.wait(60)
        info = cache.running("k")
        assert info is not None
        assert info["pid"] == holder.pid
        with cache.lock("k", blocking=False) as got:
            assert not got
        holder.kill()  # a process killed mid-computation leaves no lock behind
        holder.join(30)
        assert cache.running("k") is None
        with cache.lock("k", blocking=False) as got:
            assert got
            assert cache.running("k") is not None  # held by this process
        assert cache.running("k") is None
    finally:
        holder.kill()
        holder.join(30)


def test_slots_bound_how_many_holders_run_at_once(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 30)
    stop = threading.Event()
    other = DiskCache(tmp_path / "c", 1 << 30)
    with cache.slot(1, stop) as first:
        assert first
        stop_second = threading.Event()
        result: list[bool] = []
        waiter = threading.Thread(target=lambda: result.append(other.slot(1, stop_second).__enter__()))
        waiter.start()
        time.sleep(0.3)
        assert result == []  # still waiting for the only slot
        stop_second.set()
        waiter.join(10)
        assert result == [False]
    with other.slot(1, stop) as again:
        assert again


def test_the_folder_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 60_000)
    blob = np.zeros(1000)  # ~8 KB per entry
    for i in range(4):
        cache.put("x", f"k{i}", {"i": i}, {"v": blob})
    old = time.time() - 100
    for i in range(4):
        os.utime(_entry_file(cache, f"k{i}"), (old + i, old + i))
    assert cache.get("x", "k0") is not None  # read: now the most recently used
    for i in range(4, 8):
        cache.put("x", f"k{i}", {"i": i}, {"v": blob})
    usage = cache.usage()
    assert usage["bytes"] <= 60_000
    assert cache.counters.get("cache", "evicted") > 0
    assert _entry_file(cache, "k0").exists()
    assert not _entry_file(cache, "k1").exists()
    assert _entry_file(cache, "k7").exists()


def test_an_entry_larger_than_the_bound_is_not_kept(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 2048)
    cache.put("x", "big", {}, {"v": np.zeros(1000)})
    assert cache.get("x", "big") is None
    assert cache.counters.get("x", "too_large") == 1


def test_state_files_are_replaced_atomically_and_created_once(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 30)
    assert cache.write_state("job-1", {"started_at": 1.0}, exclusive=True)
    assert not cache.write_state("job-1", {"started_at": 2.0}, exclusive=True)
    assert cache.read_state("job-1") == {"started_at": 1.0}
    assert cache.write_state("job-1", {"started_at": 3.0})
    assert cache.read_state("job-1") == {"started_at": 3.0}


def test_default_folder_follows_xdg_then_home_then_a_private_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "weightserve" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "weightserve" / "weights"
    monkeypatch.setenv("HOME", "/nonexistent")  # a container user's home
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    folder = default_cache_dir()
    assert folder == tmp_path / "tmp" / f"weightserve-{os.getuid()}" / "weights"
    cache = DiskCache(None, 1 << 30)
    assert cache.root == folder / "v1"
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700


def test_a_temp_folder_others_can_write_is_refused_and_nothing_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"weightserve-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    cache = DiskCache(None, 1 << 30)
    assert not cache.enabled
    cache.put("x", "k", {"a": 1})
    assert cache.get("x", "k") is None
    assert cache.get_or_compute("x", "k", lambda: Entry({"a": 1})).doc == {"a": 1}
    with cache.lock("k") as got:
        assert got
