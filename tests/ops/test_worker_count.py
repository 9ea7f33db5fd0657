"""The default worker count and thread split follow the container's CPU quota, from fake cgroup files."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

import service.settings
from service.cli import threads_per_worker
from service.settings import Settings, available_cores, cpu_quota

CORES = len(os.sched_getaffinity(0))


def _files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _v2(tmp_path: Path, own: str, parent: str = "max 100000", cgroup: str = "/pod/app") -> tuple[Path, Path]:
    root = _files(tmp_path / "sys", {
        "cgroup.controllers": "cpu memory",
        "cpu.max": "max 100000",
        f"{cgroup.strip('/').rsplit('/', 1)[0]}/cpu.max": parent,
        f"{cgroup.strip('/')}/cpu.max": own,
    })  # fmt: skip
    return root, _files(tmp_path / "proc", {"cgroup": f"0::{cgroup}\n"}) / "cgroup"


@pytest.mark.parametrize(
    ("own", "parent", "quota"),
    [
        ("150000 100000", "max 100000", 1.5),
        ("max 100000", "50000 100000", 0.5),  # a limit above the process's own cgroup counts too
        ("400000 100000", "200000 100000", 2.0),
        ("max 100000", "max 100000", None),
    ],
)
def test_cgroup_v2_cpu_max(tmp_path: Path, own: str, parent: str, quota: float | None) -> None:
    root, proc = _v2(tmp_path, own, parent)
    assert cpu_quota(root, proc) == quota
    expected = CORES if quota is None else min(CORES, max(1, math.ceil(quota)))
    assert available_cores(root, proc) == expected


def test_cgroup_v1_cfs_quota_including_a_container_mounted_at_its_own_cgroup(tmp_path: Path) -> None:
    proc = _files(tmp_path / "proc", {"cgroup": "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"}) / "cgroup"
    # The host's view: the container's cgroup below the mount.
    host = _files(tmp_path / "host", {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000",
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
    })  # fmt: skip
    assert cpu_quota(host, proc) == 0.5
    assert available_cores(host, proc) == 1
    # Inside the container: its own cgroup is the mount, and /docker/abc does not exist below it.
    inside = _files(tmp_path / "inside", {
        "cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000",
    })  # fmt: skip
    assert cpu_quota(inside, proc) == 1.0
    unlimited = _files(tmp_path / "unlimited", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert cpu_quota(unlimited, proc) is None
    assert available_cores(unlimited, proc) == CORES


def test_no_cgroup_files_means_the_affinity(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path / "none", tmp_path / "nothing") is None
    assert available_cores(tmp_path / "none", tmp_path / "nothing") == CORES


def test_the_default_workers_and_threads_follow_the_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, proc = _v2(tmp_path, "100000 100000")  # one CPU, whatever the host has
    monkeypatch.setattr(service.settings, "CGROUP_ROOT", root)
    monkeypatch.setattr(service.settings, "PROC_SELF_CGROUP", proc)
    monkeypatch.delenv("WEIGHTSERVE_WORKERS", raising=False)
    assert Settings().workers == 1
    assert threads_per_worker(1) == 1
    (root / "pod" / "app" / "cpu.max").write_text("max 100000")
    assert Settings().workers == CORES
    assert threads_per_worker(2) == max(1, CORES // 2)
