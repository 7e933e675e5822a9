"""Worker count from the CPUs a container may really use (cgroup quota and affinity)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slipway.serving.concurrency import (
    affinity_cpus,
    available_cpus,
    cgroup_cpu_quota,
    web_concurrency,
)


def _cgroup_v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def _cgroup_v1(root: Path, quota: int, period: int = 100_000) -> Path:
    cpu = root / "cpu,cpuacct"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (cpu / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", None), ("200000 100000", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5)],
)
def test_cgroup_v2_quota(tmp_path: Path, cpu_max: str, expected: float | None) -> None:
    assert cgroup_cpu_quota(_cgroup_v2(tmp_path, cpu_max)) == expected


@pytest.mark.parametrize(("quota", "expected"), [(-1, None), (300_000, 3.0), (25_000, 0.25)])
def test_cgroup_v1_quota(tmp_path: Path, quota: int, expected: float | None) -> None:
    assert cgroup_cpu_quota(_cgroup_v1(tmp_path, quota)) == expected


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None


def test_quota_below_affinity_wins_rounded_down_but_never_zero(tmp_path: Path) -> None:
    cpus = affinity_cpus()
    assert available_cpus(_cgroup_v2(tmp_path / "a", "50000 100000")) == 1
    assert available_cpus(_cgroup_v2(tmp_path / "b", "max 100000")) == cpus
    huge = _cgroup_v2(tmp_path / "c", f"{(cpus + 8) * 100_000} 100000")
    assert available_cpus(huge) == cpus
    if cpus >= 2:
        assert available_cpus(_cgroup_v2(tmp_path / "d", "150000 100000")) == 1


def test_affinity_is_what_the_scheduler_allows() -> None:
    assert affinity_cpus() == len(os.sched_getaffinity(0))


def test_web_concurrency_wins_over_the_cpu_count(tmp_path: Path) -> None:
    root = _cgroup_v2(tmp_path, "100000 100000")
    assert web_concurrency({"WEB_CONCURRENCY": "5"}, cgroup_root=root) == 5
    assert web_concurrency({}, cgroup_root=root) == 1
    # The async formula: one worker per usable core, not 2n+1.
    assert web_concurrency({}, cgroup_root=tmp_path / "none") == affinity_cpus()


@pytest.mark.parametrize("value", ["zero", "0", "-2", "1.5"])
def test_invalid_web_concurrency_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="WEB_CONCURRENCY"):
        web_concurrency({"WEB_CONCURRENCY": value})
