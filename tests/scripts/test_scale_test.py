"""The scale test's own measuring parts, fast: the /proc sampler of a process tree and the flatness figure.
(The whole pipeline at 100K users is tests/integration/test_scale.py.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("scale_test", REPO / "scripts" / "scale_test.py")
scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale)

# a parent that starts a child holding ~200 MB, so the tree's sum and the largest process both see it
TREE = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; b = bytearray(200 * 2**20); time.sleep(1.5)'])\n"
    "print('step loss ', flush=True); time.sleep(0.3); print('step loss ', flush=True); child.wait()\n"
)


def test_tree_memory_sees_a_child_process_and_the_marked_window(tmp_path: Path) -> None:
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log, subprocess.Popen([sys.executable, "-c", TREE], stdout=log) as proc, \
            scale.TreeMemory(proc.pid, interval_s=0.05, log=log_path, marker="step loss") as memory:
        proc.wait()
    assert memory.peak_total >= 200 * 2**20, "the child's 200 MB belong to the tree"
    assert memory.peak_process >= 200 * 2**20
    assert memory.marked_at is not None and memory.last_marked_at >= memory.marked_at
    assert 0 < len(memory.steady()) < len(memory.series)


def test_flatness_measures_growth_between_the_second_and_last_quarter() -> None:
    flat = [(float(t), 1000) for t in range(40)]
    leak = [(float(t), 1000 + 10 * t) for t in range(40)]
    assert scale.flatness(flat)["growth_ratio"] == 0
    growth = scale.flatness(leak)
    assert growth["growth_bytes"] > 0 and growth["growth_ratio"] > 0.1
    assert scale.flatness(flat[:3]) == {"samples": 3, "growth_bytes": 0.0, "growth_ratio": 0.0}
