"""The weights cache on disk: one folder per machine and user, shared by every worker process of every
server that points at it, and kept across restarts.

An entry is a JSON document plus optional numpy arrays, stored under a key that digests everything
the result depends on (the tensor's content hash and the options that change it). A file is a magic
number, the length and sha256 of its body, then the body; it is written to a temporary file in the
same folder and renamed into place, so a reader sees a whole entry or none, and two writers of one
key simply write the same bytes. A file that does not check out (truncated, corrupt, from another
format) is a miss: it is deleted and the caller computes the result again, never serves it.

Coordination between processes uses ``flock`` on small lock files, which the kernel releases when a
process dies: a per-key lock marks a computation in progress (whoever holds it computes, everyone
else waits for it or reports the key as running), and a fixed number of slot locks bounds how many
spectral analyses run on the machine at once. The folder is bounded in size: past the bound, the
least recently used entries go.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import stat
import struct
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "v1"
_MAGIC = b"WSWCACHE"
_HEAD = struct.Struct("<8sQ32s")
_JSON_LEN = struct.Struct("<I")
_EVICT_TO = 0.8
"""Eviction empties the folder to this fraction of its bound, so it does not run after every write."""
_STALE_TEMP_S = 3600.0
_RECOUNT_S = 5.0


@dataclass(frozen=True, slots=True)
class Entry:
    doc: Any
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def cache_key(*parts: Any) -> str:
    """A file-name-safe digest of everything a result depends on."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/weightserve/weights``, else ``~/.cache/weightserve/weights`` when the home
    folder is writable, else ``<temp dir>/weightserve-<uid>/weights`` (a container user without a
    home: /tmp is writable in the shipped compose and Kubernetes deployments)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "weightserve" / "weights"
    with contextlib.suppress(RuntimeError, KeyError):
        home = Path.home()
        if home.is_dir() and os.access(home, os.W_OK | os.X_OK):
            return home / ".cache" / "weightserve" / "weights"
    return Path(tempfile.gettempdir()) / f"weightserve-{os.getuid()}" / "weights"


def _private_folder(path: Path) -> None:
    """Create ``path`` (mode 0700) and refuse it unless this user owns it and nobody else can write it:
    in a shared temp folder, someone else could otherwise plant entries for us to serve."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PermissionError(f"{path} is not a private folder of this user")


class Counters:
    """Per-process event counts by kind of entry (thread-safe)."""

    def __init__(self) -> None:
        self._counts: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._lock = threading.Lock()

    def add(self, kind: str, event: str, n: int = 1) -> None:
        with self._lock:
            self._counts[kind][event] += n

    def get(self, kind: str, event: str) -> int:
        with self._lock:
            return self._counts[kind][event]

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {kind: dict(events) for kind, events in sorted(self._counts.items())}


class DiskCache:
    """The cache folder. With no usable folder every call still works: nothing is kept, every lock
    is granted (there is nobody to coordinate with)."""

    def __init__(self, directory: Path | None, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.counters = Counters()
        self.root: Path | None = None
        self._size: int | None = None
        self._entries = 0
        self._counted_at = -_RECOUNT_S
        self._size_lock = threading.Lock()
        try:
            if directory is None:
                base = default_cache_dir()
                if base.parent.name.startswith("weightserve-"):
                    _private_folder(base.parent)
            else:
                base = directory
            root = base / FORMAT
            for sub in ("entries", "locks", "slots", "state"):
                (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
            if not os.access(root, os.W_OK):
                raise PermissionError(f"{root} is not writable")
            self.root = root
        except OSError as exc:
            log.warning("weights cache disabled (results are kept in memory only): %s", exc)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    # ------------------------------------------------------------------ entries

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / "entries" / key[:2] / key

    def get(self, kind: str, key: str, count: bool = True) -> Entry | None:
        if self.root is None:
            if count:
                self.counters.add(kind, "misses")
            return None
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if count:
                self.counters.add(kind, "misses")
            return None
        except OSError as exc:
            log.warning("weights cache: cannot read %s: %s", path.name, exc)
            return None
        entry = _decode(data)
        if entry is None:
            self.counters.add(kind, "corrupt")
            if count:
                self.counters.add(kind, "misses")
            log.warning("weights cache: entry %s is corrupt or truncated; it is recomputed", path.name)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        if count:
            self.counters.add(kind, "hits")
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently *used* goes first
        return entry

    def contains(self, key: str) -> bool:
        """Whether an entry file exists (not checked: `get` is the one that verifies)."""
        return self.root is not None and self._path(key).is_file()

    def put(self, kind: str, key: str, doc: Any, arrays: dict[str, np.ndarray] | None = None) -> None:
        if self.root is None:
            return
        data = _encode(doc, arrays or {})
        if len(data) > self.max_bytes:
            self.counters.add(kind, "too_large")
            return
        path = self._path(key)
        try:
            path.parent.mkdir(exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("weights cache: cannot write %s: %s", path.name, exc)
            return
        self.counters.add(kind, "written")
        with self._size_lock:
            if self._size is not None:
                self._size += len(data)
            over = self._size is None or self._size > self.max_bytes
        if over:
            self.evict()

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], Entry]) -> Entry:
        """The entry, computed by exactly one process on the machine: a second asker waits for the
        first one's result instead of computing it again."""
        entry = self.get(kind, key)
        if entry is not None:
            return entry
        with self.lock(key):
            entry = self.get(kind, key, count=False)
            if entry is not None:
                self.counters.add(kind, "waited")
                return entry
            entry = compute()
            self.counters.add(kind, "computed")
            self.put(kind, key, entry.doc, entry.arrays)
            return entry

    # ------------------------------------------------------------------ size bound

    def usage(self) -> dict[str, Any]:
        """The folder's size and entries (counted again at most every few seconds: watchers poll)."""
        if self.root is None:
            return {"enabled": False, "bytes": 0, "entries": 0, "max_bytes": self.max_bytes}
        with self._size_lock:
            fresh = time.monotonic() - self._counted_at < _RECOUNT_S
            if fresh and self._size is not None:
                return {"enabled": True, "bytes": self._size, "entries": self._entries, "max_bytes": self.max_bytes}
        files = self._entry_files()
        with self._size_lock:
            self._size, self._entries = sum(size for _, size, _ in files), len(files)
            self._counted_at = time.monotonic()
            return {"enabled": True, "bytes": self._size, "entries": self._entries, "max_bytes": self.max_bytes}

    def _entry_files(self) -> list[tuple[float, int, Path]]:
        assert self.root is not None
        found: list[tuple[float, int, Path]] = []
        now = time.time()
        for shard in (self.root / "entries").iterdir():
            with contextlib.suppress(OSError):
                for item in os.scandir(shard):
                    with contextlib.suppress(OSError):
                        info = item.stat(follow_symlinks=False)
                        if item.name.startswith(".tmp-"):
                            if now - info.st_mtime > _STALE_TEMP_S:  # a writer that died mid-write
                                os.unlink(item.path)
                            continue
                        found.append((info.st_mtime, info.st_size, Path(item.path)))
        return found

    def evict(self) -> None:
        """Delete least recently used entries until the folder is well under its bound. One process
        at a time; the others skip (the first one's pass covers them)."""
        if self.root is None:
            return
        with self._file_lock(self.root / "evict.lock", blocking=False) as got:
            if not got:
                return
            files = sorted(self._entry_files())
            total = sum(size for _, size, _ in files)
            target = self.max_bytes * _EVICT_TO
            for _, size, path in files:
                if total <= target:
                    break
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    total -= size
                    self.counters.add("cache", "evicted")
            with self._size_lock:
                self._size = total

    # ------------------------------------------------------------------ locks

    @contextlib.contextmanager
    def _file_lock(self, path: Path, blocking: bool, info: dict[str, Any] | None = None) -> Iterator[bool]:
        """``flock`` on ``path``; when ``info`` is given the holder describes itself in the file and
        removes the file on release (a waiter that wakes on the removed file locks the new one)."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    yield False
                    return
                raise
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is None or current.st_ino != os.fstat(fd).st_ino:
                os.close(fd)  # the holder before us removed this file: lock the one in its place
                continue
            break
        try:
            if info is not None:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(info).encode())
            yield True
        finally:
            if info is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            os.close(fd)

    @contextlib.contextmanager
    def lock(self, key: str, blocking: bool = True) -> Iterator[bool]:
        """Hold the computation of ``key``: ``True`` when this caller holds it, ``False`` (only when
        not blocking) when another thread or process does."""
        if self.root is None:
            yield True
            return
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}
        with self._file_lock(self.root / "locks" / f"{key}.lock", blocking, info) as got:
            yield got

    def running(self, key: str) -> dict[str, Any] | None:
        """Who is computing ``key`` right now (pid, host, started_at), or None."""
        if self.root is None:
            return None
        path = self.root / "locks" / f"{key}.lock"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return None
                try:
                    info = json.loads(os.read(fd, 4096) or b"{}")
                except (OSError, ValueError):
                    info = {}
                return info if isinstance(info, dict) else {}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def slot(self, count: int, stop: threading.Event) -> Iterator[bool]:
        """One of ``count`` machine-wide slots, waited for until one frees up or ``stop`` is set."""
        if self.root is None:
            yield True
            return
        while not stop.is_set():
            for index in range(max(count, 1)):
                with self._file_lock(self.root / "slots" / f"{index}.lock", blocking=False) as got:
                    if got:
                        yield True
                        return
            stop.wait(0.1)
        yield False

    # ------------------------------------------------------------------ small state files

    def read_state(self, name: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        try:
            doc = json.loads((self.root / "state" / f"{name}.json").read_bytes())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def remove_state(self, name: str) -> None:
        if self.root is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.root / "state" / f"{name}.json").unlink()

    def write_state(self, name: str, doc: dict[str, Any], exclusive: bool = False) -> bool:
        """Replace a state file atomically; with ``exclusive``, only create it (False if it exists)."""
        if self.root is None:
            return False
        path = self.root / "state" / f"{name}.json"
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(doc).encode())
            try:
                if exclusive:
                    os.link(tmp, path)
                else:
                    os.replace(tmp, path)
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        except OSError as exc:
            log.warning("weights cache: cannot write state %s: %s", name, exc)
            return False
        return True


def _encode(doc: Any, arrays: dict[str, np.ndarray]) -> bytes:
    table = []
    blobs = []
    offset = 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        blob = data.tobytes()
        table.append({"name": name, "dtype": data.dtype.str, "shape": list(data.shape), "offset": offset,
                      "nbytes": len(blob)})
        blobs.append(blob)
        offset += len(blob)
    header = json.dumps({"doc": doc, "arrays": table}).encode()
    body = _JSON_LEN.pack(len(header)) + header + b"".join(blobs)
    return _HEAD.pack(_MAGIC, len(body), hashlib.sha256(body).digest()) + body


def _decode(data: bytes) -> Entry | None:
    """The entry, or None for anything that is not a whole, intact entry of this format."""
    if len(data) < _HEAD.size:
        return None
    magic, length, digest = _HEAD.unpack_from(data)
    body = data[_HEAD.size :]
    if magic != _MAGIC or length != len(body) or hashlib.sha256(body).digest() != digest:
        return None
    try:
        (json_len,) = _JSON_LEN.unpack_from(body)
        header = json.loads(body[_JSON_LEN.size : _JSON_LEN.size + json_len])
        start = _JSON_LEN.size + json_len
        arrays = {}
        for spec in header["arrays"]:
            begin = start + int(spec["offset"])
            end = begin + int(spec["nbytes"])
            if end > len(body):
                return None
            arrays[str(spec["name"])] = np.frombuffer(body[begin:end], dtype=np.dtype(spec["dtype"])).reshape(
                spec["shape"])
        return Entry(header["doc"], arrays)
    except (ValueError, KeyError, TypeError, struct.error):
        return None
