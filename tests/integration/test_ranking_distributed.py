"""TransAct and DLRM-v2 under 2-process DMP (torchrun, gloo): falling loss, every example evaluated once, and the
2-rank sharded checkpoint evaluates again on 1 rank (`seqrec evaluate`) and exports to a TorchScript scorer equal
to the eager model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.export import ExportConfig, export_run
from tests.conftest import REPO, ranking_overrides
from trainer.cli import main as seqrec

pytestmark = [pytest.mark.integration, pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parametrize("model", ["transact", "dlrm"])
def test_trains_on_two_sharded_ranks_and_exports(model: str, tiny_impressions: Path, tmp_path: Path) -> None:
    overrides = ranking_overrides(tiny_impressions, tmp_path, model, "trainer.run_id=two", "trainer.sharding=row_wise",
                                  "trainer.epochs=3")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "trainer/train.py", *overrides], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "default" / "two"
    metrics = json.loads((run / "metrics.json").read_text())
    losses = metrics["train_losses"]
    assert sum(losses[-5:]) < sum(losses[:5]), "loss did not decrease"
    assert metrics["throughput"]["world_size"] == 2
    test = metrics["test"]
    imp_test = json.loads((tiny_impressions / "manifest.json").read_text())["counts"]["impressions_test"]
    assert test["examples"] == imp_test, "every test impression scored once across the two ranks"
    assert 0.5 < test["auc_view"] <= 1.0  # better than chance on held-out impressions
    assert seqrec(["evaluate", str(run), "--split", "test"]) == 0  # the 2-rank checkpoint on 1 rank
    again = json.loads((run / "eval_test.json").read_text())
    assert again["auc_view"] == pytest.approx(test["auc_view"], abs=1e-6) and again["examples"] == imp_test
    meta = export_run(ExportConfig(run=run, output=tmp_path / "export"))
    assert meta["check"]["max_abs_logit_diff"] < 1e-4
