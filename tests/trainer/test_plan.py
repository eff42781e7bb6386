"""`seqrec plan` on simulated clusters (TorchRec's real planner, meta device) and the plan every run records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import train_overrides
from trainer.cli import main as seqrec
from trainer.config import load_config
from trainer.model_factory import build_model
from trainer.plan import ExtraTable, SimulatedTopology, _PlannedModel, plan_model
from trainer.train import run_training

USERS, ITEMS, DIM = 10_000_000, 1_000_000, 64


def _plan(topology: SimulatedTopology, *overrides: str, extra: tuple[ExtraTable, ...] = ()) -> dict:
    cfg = load_config([f"model.dim={DIM}", *overrides])
    model = _PlannedModel(build_model(cfg.model, ITEMS, cfg.data.max_len, torch.device("meta")), list(extra), DIM)
    return plan_model(model, topology, cfg.optim, cfg.trainer.sharding, cfg.data.batch_size)


def test_64_simulated_gpus_balance_10m_users_and_1m_items() -> None:
    report = _plan(SimulatedTopology(hosts=8, gpus_per_host=8), extra=(ExtraTable("user_table", USERS),))
    assert report["world_size"] == 64
    tables = {t["table"]: t for t in report["tables"]}
    assert set(tables) == {"user_table", "item_table"}
    assert tables["user_table"]["rows"] == USERS and tables["item_table"]["rows"] == ITEMS + 1  # + padding row
    for table in tables.values():
        # every byte of every table is placed exactly once (no data-parallel copy at this size)
        assert sum(table["bytes_per_rank"].values()) == table["rows"] * table["dim"] * 4, table["table"]
    assert len(report["weight_bytes_per_rank"]) == len(report["estimate_bytes_per_rank"]) == 64
    assert min(report["weight_bytes_per_rank"]) > 0, "a rank holds nothing"
    assert report["balance"] <= 1.2 and report["weight_balance"] <= 1.2 and report["estimate_balance"] <= 1.2
    # row-wise Adagrad (the default) keeps one fp32 per row on top of the weights
    assert sum(report["optimizer_bytes_per_rank"]) == sum(t["rows"] * 4 for t in tables.values())
    assert all(e >= w for e, w in zip(report["estimate_bytes_per_rank"], report["weight_bytes_per_rank"]))


def test_adam_state_is_counted_per_rank() -> None:
    report = _plan(SimulatedTopology(hosts=2, gpus_per_host=8), "optim.sparse_optimizer=adam")
    assert report["optimizer"] == "adam"
    assert report["optimizer_bytes_per_rank"] == [2 * w for w in report["weight_bytes_per_rank"]]
    assert report["balance"] <= 1.2


def test_table_wise_constraint_puts_each_table_on_one_rank() -> None:
    report = _plan(SimulatedTopology(hosts=2, gpus_per_host=4), "trainer.sharding=table_wise",
                   extra=(ExtraTable("user_table", USERS),))
    for table in report["tables"]:
        assert table["sharding_type"] == "table_wise" and len(table["ranks"]) == 1, table
    assert report["weight_balance"] > 1.2, "two tables on eight ranks cannot balance"


def test_plan_command_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "plan.json"
    args = ["plan", "--items", "50000", "--table", "user_table:200000:32", "--hosts", "2", "--gpus-per-host", "2",
            "--json", str(out), "model.dim=32"]
    assert seqrec(args) == 0
    printed = capsys.readouterr().out
    assert "plan for 4 ranks" in printed and "user_table" in printed and "balance max/mean" in printed
    report = json.loads(out.read_text())
    assert report["topology"]["hosts"] == 2 and {t["table"] for t in report["tables"]} == {"user_table", "item_table"}


@pytest.mark.parametrize("bad", ["user_table", "items:10", "u:0", "u:10:x"])
def test_bad_table_spec_is_one_usage_error(bad: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        seqrec(["plan", "--items", "10", "--table", bad])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--table" in err and ("NAME:ROWS" in err or "must not" in err)


def test_plan_without_items_or_dataset_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert seqrec(["plan", f"data.path={tmp_path}"]) == 2
    assert "--items" in capsys.readouterr().err


def test_training_run_records_its_plan(tiny_dataset: Path, tmp_path: Path) -> None:
    results = run_training(load_config(train_overrides(
        tiny_dataset, tmp_path, "trainer.run_id=plan", "trainer.max_steps=2", "trainer.test_at_end=false",
        "trainer.eval_every_epochs=0")))
    report = json.loads((Path(results["run_dir"]) / "plan.json").read_text())
    (table,) = report["tables"]
    assert table["table"] == "item_table" and table["ranks"] == [0] and report["world_size"] == 1
    assert table["rows"] == 301 and table["dim"] == 16  # 300 items + padding, model.dim=16
    assert report["weight_bytes_per_rank"] == [301 * 16 * 4]
    assert report["optimizer"] == "rowwise_adagrad" and report["optimizer_bytes_per_rank"] == [301 * 4]
