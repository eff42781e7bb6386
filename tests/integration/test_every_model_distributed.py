"""Every registered retrieval model trains under 2-process DMP (torchrun, gloo, row-wise sharded item table) with
falling loss, and its 2-rank checkpoint evaluates on 1 rank to the same metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, train_overrides
from tests.modules.model_zoo import retrieval_models
from trainer.cli import main as seqrec

pytestmark = [pytest.mark.integration, pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parametrize("name", retrieval_models())
def test_trains_on_two_ranks_and_evaluates_on_one(name: str, tiny_dataset: Path, tmp_path: Path) -> None:
    overrides = train_overrides(tiny_dataset, tmp_path, f"model={name}", "model.dim=16", "trainer.run_id=r",
                                "trainer.sharding=row_wise", "trainer.epochs=3", "optim.lr=0.005")
    overrides = [o for o in overrides if not o.startswith("model.encoder.dropout")]  # not every encoder has one
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "trainer/train.py",
         *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "default" / "r"
    metrics = json.loads((run / "metrics.json").read_text())
    losses = metrics["train_losses"]
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert metrics["test"]["users"] == 600 and metrics["throughput"]["world_size"] == 2
    assert seqrec(["evaluate", str(run), "--split", "test"]) == 0
    again = json.loads((run / "eval_test.json").read_text())
    assert again["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)

