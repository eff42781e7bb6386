"""The training loop in this process (world size 1, real DMP over a 1-process gloo group): pipeline = plain loop,
exact resume, fine-tuning, SIGTERM checkpointing and clear errors for bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tests.conftest import train_overrides
from trainer import checkpoint
from trainer.config import load_config
from trainer.data.schema import read_manifest
from trainer.distributed import init_distributed, shutdown_distributed
from trainer.errors import ConfigError, DataError
from trainer.train import Trainer, run_training


def _train(dataset: Path, out: Path, *extra: str) -> dict:
    return run_training(load_config(train_overrides(dataset, out, *extra)))


def test_pipelined_loop_equals_plain_loop_and_learns(tiny_dataset: Path, tmp_path: Path) -> None:
    piped = _train(tiny_dataset, tmp_path, "trainer.run_id=piped", "trainer.pipeline=true")
    plain = _train(tiny_dataset, tmp_path, "trainer.run_id=plain", "trainer.pipeline=false")
    assert piped["steps"] == plain["steps"] > 10
    assert piped["train_losses"] == pytest.approx(plain["train_losses"], rel=1e-5, abs=1e-6)
    losses = piped["train_losses"]
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, "loss did not decrease"
    speed = piped["throughput"]
    assert speed["world_size"] == 1 and speed["sequences_per_s"] > 0 and speed["targets_per_s"] > speed["sequences_per_s"]
    test = piped["test"]
    assert test["users"] == 600 and (test["protocol"], test["ranking"]) == ("seen_removed", "full")
    assert test["ndcg@10"] > 0.05  # popularity-free synthetic structure is learnable
    run = Path(piped["run_dir"])
    assert (run / "config.yaml").is_file() and (run / "metrics.json").is_file() and any((run / "tb").iterdir())
    assert list((run / "checkpoints").glob("step_*/meta.json"))
    assert list(run.glob("per_user_test.rank0.parquet"))


def test_resume_continues_exactly(tiny_dataset: Path, tmp_path: Path) -> None:
    straight = _train(tiny_dataset, tmp_path, "trainer.run_id=straight", "trainer.max_steps=24",
                      "trainer.test_at_end=false")
    first = _train(tiny_dataset, tmp_path, "trainer.run_id=resumed", "trainer.max_steps=13",
                   "trainer.test_at_end=false")
    assert first["steps"] == 13  # stops mid-epoch: the loader must skip what was trained on
    resumed = _train(tiny_dataset, tmp_path, "trainer.run_id=resumed", "trainer.max_steps=24",
                     "trainer.resume=true", "trainer.test_at_end=false")
    assert resumed["train_losses"] == pytest.approx(straight["train_losses"], rel=1e-5, abs=1e-6)


def test_init_from_fine_tunes_with_fresh_optimizer(tiny_dataset: Path, tmp_path: Path) -> None:
    base = _train(tiny_dataset, tmp_path, "trainer.run_id=base", "trainer.max_steps=10", "trainer.test_at_end=false")
    tuned = _train(tiny_dataset, tmp_path, "trainer.run_id=tuned", "trainer.max_steps=3",
                   f"trainer.init_from={base['run_dir']}", "optim.lr=0.0001", "trainer.test_at_end=false")
    scratch = _train(tiny_dataset, tmp_path, "trainer.run_id=scratch", "trainer.max_steps=3",
                     "trainer.test_at_end=false")
    assert tuned["train_losses"][0] < scratch["train_losses"][0]


def test_bad_inputs_fail_with_one_clear_error(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        _train(tmp_path / "missing", tmp_path)
    old = tmp_path / "old_dataset"
    shutil.copytree(tiny_dataset, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 999
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="format version 999"):
        _train(old, tmp_path)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        _train(tiny_dataset, tmp_path, "trainer.run_id=never", "trainer.resume=true")
    base = _train(tiny_dataset, tmp_path, "trainer.run_id=small", "trainer.max_steps=2", "trainer.test_at_end=false")
    with pytest.raises(ConfigError, match="only the number of rows may grow"):
        _train(tiny_dataset, tmp_path, "trainer.run_id=other", "model.dim=32", f"trainer.init_from={base['run_dir']}")
    assert checkpoint.latest_checkpoint(base["run_dir"]) is not None
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        _train(tiny_dataset, tmp_path, "trainer.run_id=small", "trainer.max_steps=2")


def test_accumulation_bf16_and_early_stopping(tiny_dataset: Path, tmp_path: Path) -> None:
    accumulated = _train(tiny_dataset, tmp_path, "trainer.run_id=acc", "trainer.pipeline=false", "optim.accumulate=2",
                         "trainer.max_steps=4", "trainer.test_at_end=false")
    assert accumulated["steps"] == 4
    bf16 = _train(tiny_dataset, tmp_path, "trainer.run_id=bf16", "trainer.bf16=true", "trainer.max_steps=3",
                  "trainer.test_at_end=false")
    assert all(loss == loss for loss in bf16["train_losses"])  # finite, no NaN
    stopped = _train(tiny_dataset, tmp_path, "trainer.run_id=early", "trainer.epochs=30",
                     "trainer.early_stopping_patience=1", "optim.lr=1e-12", "optim.sparse_lr=1e-12",
                     "trainer.test_at_end=false")
    assert stopped["epochs"] < 30  # nothing can improve at a vanishing learning rate (a zero one is refused)


def test_target_loss_weight_scales_each_batch_by_its_targets(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = load_config(train_overrides(tiny_dataset, tmp_path, "trainer.run_id=weighted", "optim.loss_weight=target",
                                      "data.bucket_batches=4"))
    env = init_distributed()
    try:
        trainer = Trainer(cfg, env)
        counts = [len(batch.sparse["target"].values()) for batch in trainer.loader]
        assert trainer.target_norm == pytest.approx(sum(counts) / len(counts))
        short = min(trainer.loader, key=lambda batch: len(batch.sparse["target"].values()))
        loss, logs = trainer._forward(short.to(env.device))
        assert logs["num_targets"] < trainer.target_norm  # a short batch weighs less than its mean loss
        assert loss.item() == pytest.approx(logs["loss"].item() * logs["num_targets"].item() / trainer.target_norm)
        result = trainer.train()  # and the pipelined loop trains with it: every batch of both epochs, finite losses
        assert result["steps"] == 2 * len(counts)
        assert result["train_losses"] and all(math.isfinite(x) for x in result["train_losses"])
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_sigterm_checkpoints_and_stops(tiny_dataset: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "trainer.train",
           *train_overrides(tiny_dataset, tmp_path, "trainer.run_id=term", "trainer.epochs=1000", "trainer.log_every=1")]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "default" / "term"
    deadline = time.time() + 240
    while time.time() < deadline and not list(run.glob("tb/events*")):
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]
    assert "SIGTERM received" in output
    ckpt = checkpoint.latest_checkpoint(run)
    assert ckpt is not None and checkpoint.read_meta(ckpt)["step"] > 0


@pytest.mark.parametrize("every", [0, 1])
def test_final_metrics_come_from_the_best_validation_checkpoint(tiny_dataset: Path, tmp_path: Path, every: int) -> None:
    # Learning rates that warm up to absurd values: NDCG@10 peaks after epoch 1 (~0.2), then collapses (~0.02).
    # keep=1 must still keep the best checkpoint; checkpoint_every=1 has every epoch end checkpointed before
    # its evaluation, and best.json must still be written.
    results = _train(tiny_dataset, tmp_path, "trainer.run_id=best", "trainer.epochs=4", "optim.lr=1.0",
                     "optim.sparse_lr=100.0", "optim.warmup_steps=120", "trainer.keep_checkpoints=1",
                     f"trainer.checkpoint_every={every}", "eval.per_user=false")
    history = results["history"]
    seconds = [h["train_seconds"] for h in history]
    assert seconds == sorted(seconds) and seconds[0] > 0  # time to reach each validation figure
    best = max(history, key=lambda h: h["ndcg@10"])
    assert results["best"] == {"step": best["step"], "valid_ndcg@10": best["ndcg@10"]}
    assert best["step"] != results["steps"], "pick a setting whose best epoch is not the last one"
    run = Path(results["run_dir"])
    recorded = json.loads((run / checkpoint.BEST).read_text())
    assert recorded["checkpoint"] == f"step_{best['step']}"
    assert checkpoint.best_checkpoint(run) == checkpoint.checkpoint_dir(run, best["step"])
    assert checkpoint.latest_checkpoint(run) == checkpoint.checkpoint_dir(run, results["steps"])
    # The final valid metrics are the best checkpoint's own (deterministic evaluation), not the last model's.
    assert results["valid"]["ndcg@10"] == pytest.approx(best["ndcg@10"], abs=1e-9)


def test_replicated_tables_learn_with_dense_adamw_resume_exactly_and_export(tiny_dataset: Path, tmp_path: Path) -> None:
    from serving.export import ExportConfig, export_run

    rep = ("trainer.sharding=replicated", "trainer.test_at_end=false", "optim.lr=0.01")
    straight = _train(tiny_dataset, tmp_path, "trainer.run_id=rs", "trainer.max_steps=24", *rep)
    losses = straight["train_losses"]
    assert losses[0] == pytest.approx(math.log(read_manifest(tiny_dataset).num_items), rel=0.15)  # initialised, not N(0, 1)
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, "loss did not decrease"
    _train(tiny_dataset, tmp_path, "trainer.run_id=rr", "trainer.max_steps=13", *rep)
    resumed = _train(tiny_dataset, tmp_path, "trainer.run_id=rr", "trainer.max_steps=24", "trainer.resume=true", *rep)
    assert resumed["train_losses"] == pytest.approx(losses, rel=1e-5, abs=1e-6)
    meta = export_run(ExportConfig(run=Path(straight["run_dir"]), output=tmp_path / "export", dense="fp32"))
    best = max(h["ndcg@10"] for h in straight["history"])
    assert meta["metrics"]["fp32_ndcg@10"] == pytest.approx(best, rel=1e-6)

