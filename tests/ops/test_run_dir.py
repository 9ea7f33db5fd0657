"""The private working folder: made per server, removed at exit, and after a crash by the next server."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from service.ops.run_dir import private_run_dir


def test_a_folder_per_server_removed_when_it_stops(tmp_path: Path) -> None:
    with private_run_dir(tmp_path) as first, private_run_dir(tmp_path) as second:
        assert first != second
        assert first.parent == second.parent == tmp_path
        assert stat.S_IMODE(first.stat().st_mode) == 0o700
        (first / "snapshots").mkdir()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_left_by_a_killed_server_goes_and_a_running_ones_stays(tmp_path: Path) -> None:
    script = "import sys, time; from pathlib import Path; from service.ops.run_dir import private_run_dir\n" \
        "with private_run_dir(Path(sys.argv[1])) as d: print(d, flush=True); time.sleep(60)"
    root = Path(__file__).resolve().parents[2]
    killed = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, cwd=root)
    running = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, cwd=root)
    try:
        assert killed.stdout is not None
        assert running.stdout is not None
        left, alive = Path(killed.stdout.readline().decode().strip()), Path(running.stdout.readline().decode().strip())
        killed.kill()
        killed.wait()
        for folder in (left, alive):  # older than the grace a new folder gets
            past = time.time() - 120
            os.utime(folder / "lock", (past, past))
        with private_run_dir(tmp_path) as mine:
            assert not left.exists()
            assert alive.is_dir()
            assert mine.is_dir()
    finally:
        running.kill()
        running.wait()
