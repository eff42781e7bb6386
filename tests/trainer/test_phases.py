"""Multi-phase training: each phase gets its own loss, batch size, learning rate and schedule, starts from the
weights the one before ended with, and a resumed run skips finished phases and resumes the interrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import train_overrides
from trainer.config import load_config
from trainer.errors import ConfigError
from trainer.train import run_training

pytestmark = pytest.mark.slow
PHASES = ('trainer.phases=[{name: warm, overrides: ["model.objective.loss=bpr", "data.batch_size=16", '
          '"optim.schedule=constant", "trainer.epochs=1"]}, {name: main, overrides: ["data.batch_size=64", '
          '"optim.lr=0.003", "trainer.epochs=1"]}]')


def _overrides(dataset: Path, out: Path, *extra: str) -> list[str]:
    return train_overrides(dataset, out, "trainer.run_id=ph", "trainer.test_at_end=false", *extra)


def test_phases_switch_loss_batch_and_lr_and_chain_their_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    results = run_training(load_config(_overrides(tiny_dataset, tmp_path, PHASES)))
    warm, main = (tmp_path / "default" / name for name in ("ph-0-warm", "ph-1-main"))
    assert [p["phase"] for p in results["phases"]] == ["warm", "main"] and results["run_dir"] == str(main)
    warm_cfg, main_cfg = (yaml.safe_load((d / "config.yaml").read_text()) for d in (warm, main))
    assert (warm_cfg["model"]["objective"]["loss"], warm_cfg["data"]["batch_size"]) == ("bpr", 16)
    assert warm_cfg["data"]["negatives"] == "auto" and warm_cfg["optim"]["schedule"] == "constant"
    assert (main_cfg["model"]["objective"]["loss"], main_cfg["data"]["batch_size"]) == ("softmax", 64)
    assert main_cfg["optim"]["lr"] == 0.003 and main_cfg["trainer"]["init_from"] == str(warm)
    steps = [json.loads((d / "metrics.json").read_text())["steps"] for d in (warm, main)]
    assert steps[0] > steps[1] > 0  # batch 16 vs 64 over one epoch each
    # the main phase started from the warm-up's weights: alone (same seed, fresh weights) its first loss differs
    alone = run_training(load_config(_overrides(tiny_dataset, tmp_path / "alone", "data.batch_size=64",
                                                "optim.lr=0.003", "trainer.epochs=1")))
    chained = json.loads((main / "metrics.json").read_text())["train_losses"]
    assert chained[0] != pytest.approx(alone["train_losses"][0], rel=1e-3)


def test_resume_skips_finished_phases_and_resumes_the_interrupted_one(tiny_dataset: Path, tmp_path: Path) -> None:
    run_training(load_config(_overrides(tiny_dataset, tmp_path, PHASES)))
    main = tmp_path / "default" / "ph-1-main"
    (main / "metrics.json").unlink()  # as if the run had been killed after its checkpoints
    results = run_training(load_config(_overrides(tiny_dataset, tmp_path, PHASES, "trainer.resume=true")))
    assert results["phases"][0]["skipped"] and "skipped" not in results["phases"][1]
    assert (main / "metrics.json").is_file()


def test_bad_phases_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trainer.phases\[0\] \(x\).*model.objective.loss"):
        load_config(['trainer.phases=[{name: x, overrides: ["model.objective.loss=nope"]}]'])
    with pytest.raises(ConfigError, match="letters, digits"):
        load_config(['trainer.phases=[{name: "a b", overrides: []}]'])
    with pytest.raises(ConfigError, match="may not set"):
        load_config(['trainer.phases=[{name: a, overrides: ["trainer.run_id=x"]}]'])
