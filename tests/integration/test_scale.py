"""`scripts/scale_test.py` at 100K users: synth -> prepare -> 2-rank training with the item table sharded ->
full-ranking evaluation of a user sample, with the per-stage report it prints and writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.distributed, pytest.mark.slow]
STEPS, EVAL_USERS = 40, 2048


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("scale")
    argv = [sys.executable, str(REPO / "scripts" / "scale_test.py"), "--users", "100000", "--steps", str(STEPS),
            "--eval-users", str(EVAL_USERS), "--workdir", str(work)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    assert "training RSS growth" in proc.stdout and "report:" in proc.stdout
    return {**json.loads((work / "scale_report.json").read_text()), "work": work}


def test_every_stage_ran_and_reported(report: dict) -> None:
    stages = report["stages"]
    assert list(stages) == ["synth", "prepare", "train", "evaluate"]
    assert report["users"] == 100_000 and report["events"] > 2_000_000, "about 30 events per user"
    for name, stage in stages.items():
        assert stage["seconds"] > 0 and stage["peak_rss_total_bytes"] > 0, name
    assert stages["synth"]["disk_bytes"] > 0 and stages["prepare"]["disk_bytes"] > 0
    assert stages["synth"]["events_per_s"] > 0 and stages["train"]["sequences_per_s"] > 0
    assert stages["train"]["steps"] == STEPS


def test_item_table_is_row_wise_sharded_over_two_ranks(report: dict) -> None:
    plan = json.loads((report["work"] / "runs" / "default" / "scale" / "plan.json").read_text())
    (table,) = plan["tables"]
    assert table["sharding_type"] == "row_wise" and table["ranks"] == [0, 1]
    assert table["rows"] == report["items"] + 1 and report["items"] > 500_000, "most of the 1M items were seen"


def test_training_memory_is_flat_and_evaluation_ranks_the_sample(report: dict) -> None:
    train = report["stages"]["train"]
    assert train["rss_flatness"]["samples"] >= 8, "the sampler saw the training loop"
    assert abs(train["rss_flatness"]["growth_ratio"]) < 0.1, train["rss_flatness"]
    evaluation = report["stages"]["evaluate"]
    assert evaluation["users"] == EVAL_USERS
    assert 0.0 <= evaluation["metrics"]["ndcg@10"] <= evaluation["metrics"]["hr@10"] <= 1.0
