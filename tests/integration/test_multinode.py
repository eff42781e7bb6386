"""The multi-node path on one machine: `torchx run -s local_cwd dist.ddp -j 2x1` (two torchrun agents, "nodes",
meeting at a c10d rendezvous on localhost) trains the same run as `-j 1x2` (one agent, two ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import train_overrides
from tests.integration.test_distributed_training import BIN, _only_run, _run
from trainer.distributed import free_port

pytestmark = [pytest.mark.integration, pytest.mark.distributed, pytest.mark.slow]


def _torchx(dataset: Path, out: Path, jobs: str) -> Path:
    overrides = train_overrides(dataset, out, f"trainer.experiment=j{jobs}", "trainer.sharding=row_wise")
    _run(
        [str(BIN / "torchx"), "run", "-s", "local_cwd", "--scheduler_args", f"log_dir={out / 'logs'}",
         "dist.ddp", "-j", jobs, "--rdzv_port", str(free_port()), "--script", "trainer/train.py", "--", *overrides],
        out,
    )
    return _only_run(out / f"j{jobs}")


@pytest.fixture(scope="module")
def runs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {jobs: _torchx(tiny_dataset, tmp_path_factory.mktemp(jobs), jobs) for jobs in ("1x2", "2x1")}


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_two_nodes_train_the_same_loss_curve_as_one_node(runs: dict[str, Path]) -> None:
    one, two = _metrics(runs["1x2"]), _metrics(runs["2x1"])
    assert two["throughput"]["world_size"] == one["throughput"]["world_size"] == 2
    assert len(two["train_losses"]) == len(one["train_losses"]) > 10
    # the tolerance of the trainer's own parity tests (pipeline vs plain loop, resume vs straight)
    assert two["train_losses"] == pytest.approx(one["train_losses"], rel=1e-5, abs=1e-6)
    assert two["test"]["ndcg@10"] == pytest.approx(one["test"]["ndcg@10"], rel=1e-4)
    assert two["test"]["users"] == 600


def test_two_node_run_shares_one_folder_plan_and_checkpoint(runs: dict[str, Path]) -> None:
    run = runs["2x1"]
    assert run.name.startswith("train-"), "both nodes should use the torchx app id as the run id"
    plan = json.loads((run / "plan.json").read_text())
    (table,) = plan["tables"]
    assert table["sharding_type"] == "row_wise" and table["ranks"] == [0, 1] and plan["world_size"] == 2
    assert sum(plan["weight_bytes_per_rank"]) == table["rows"] * table["dim"] * 4
    ckpt = max((run / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    assert {p.name for p in ckpt.glob("rank_*.pt")} == {"rank_0.pt", "rank_1.pt"}
