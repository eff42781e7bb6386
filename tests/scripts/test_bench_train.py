"""scripts/bench_train.py runs end to end at a tiny size and prints its table with the MFU column (no timing is
asserted: machines are noisy); the FLOP count follows its formula."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _module():
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "scripts" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_useful_flops_counts_projections_attention_and_loss() -> None:
    bench = _module()
    # 2 sequences of 3 tokens each: 2 visible keys on average; dim 4, 10 items, full softmax
    per_token = bench.BLOCKS * (12 * 16 + 4 * 4 * 2) + 2 * 4 * 10
    assert bench.useful_flops(6, 2, 4, "softmax", 10) == pytest.approx(3 * per_token * 6)
    assert bench.useful_flops(6, 2, 4, "bce", 10) < bench.useful_flops(6, 2, 4, "softmax", 10)


def test_bench_train_runs_at_a_tiny_size(tmp_path: Path, shared_data: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/bench_train.py", "--steps", "1", "--warmup", "1", "--variants", "fp32",
         "--threads", "1", "--dataset", str(tmp_path / "ml1m")],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("variant"))
    assert "MFU" in header and "x seq/s" in header
    assert any(line.startswith("fp32") for line in lines) and any(line.startswith("baseline") for line in lines)
