"""Thread choice from given core counts, cgroup quotas (v1 and v2) and process counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer import threads


@pytest.mark.parametrize(
    ("cores", "ranks", "processes", "expected"),
    [(2, 1, 1, 2), (2, 2, 2, 1), (2, 1, 2, 1), (16, 2, 2, 8), (16, 2, 4, 4), (1.5, 1, 1, 1), (2, 4, 4, 1), (8, 1, 3, 2)],
)
def test_threads_divide_the_cores(cores: float, ranks: int, processes: int, expected: int) -> None:
    assert threads.choose_threads(cores, ranks, processes) == expected


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpus(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpus(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert threads.cgroup_cpus(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpus(tmp_path) is None
    assert threads.cgroup_cpus(tmp_path / "missing") is None


def test_available_cores_is_capped_by_the_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert threads.available_cores(tmp_path) == 0.5
    assert threads.available_cores(tmp_path / "none") >= 1


def test_training_processes_are_counted_from_proc(tmp_path: Path) -> None:
    for pid, cmd in (("11", b"python\0-m\0trainer.train\0x=1"), ("12", b"torchrun\0trainer/train.py"),
                     ("13", b"bash\0-c\0ls"), ("self", b"trainer.train")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(cmd)
    assert threads.training_processes(tmp_path) == 2
    assert threads.training_processes(tmp_path / "missing") == 1


def test_configure_threads_prefers_the_setting_then_the_environment(monkeypatch) -> None:
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(3, 1) == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.configure_threads(0, 1) == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        expected = threads.choose_threads(threads.available_cores(), 1, threads.training_processes())
        assert threads.configure_threads(0, 1) == expected
    finally:
        torch.set_num_threads(before)
