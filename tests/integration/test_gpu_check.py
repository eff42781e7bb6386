"""`scripts/gpu_check.sh`: the whole GPU check where torch sees a CUDA GPU, a clean skip (exit 0) where not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_gpu_check_runs_or_skips_cleanly() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--steps", "30"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if torch.cuda.is_available():
        assert "gpu_check: OK" in proc.stdout and "sdpa" in proc.stdout
    else:
        assert proc.stdout.strip() == f"gpu_check: skipping, no CUDA GPU visible to torch {torch.__version__}"


def test_gpu_check_rejects_unknown_options() -> None:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--bogus"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
