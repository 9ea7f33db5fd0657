"""The server's private working folder: model snapshots, shared statistics, the control socket.

One per running server (the supervisor's, shared by its workers; or the single process's own),
created with mode 0700 inside the configured parent and removed when the server stops. A server
that was killed cannot remove its folder; the next server that starts under the same parent removes
folders whose owner is gone: each holds an exclusive lock on its ``lock`` file for as long as it
runs, and the kernel drops the lock when the process dies, whatever the PID namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_PREFIX = "weightserve-"
_LOCK = "lock"
_GRACE_S = 60.0


@contextlib.contextmanager
def private_run_dir(parent: Path | None) -> Iterator[Path]:
    """A new private folder under ``parent`` (default: the system's temporary folder) while the block runs."""
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(base)
    folder = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=base))
    fd = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def _remove_abandoned(base: Path) -> None:
    for folder in base.glob(f"{_PREFIX}*"):
        lock = folder / _LOCK
        try:
            # A folder a moment old may be one whose server has not taken its lock yet.
            if folder.is_symlink() or time.time() - lock.stat().st_mtime < _GRACE_S:
                continue
        except OSError:
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its server is running
        finally:
            os.close(fd)
        log.info("removing %s, left behind by a server that is gone", folder)
        shutil.rmtree(folder, ignore_errors=True)
