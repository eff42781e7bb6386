"""Every config in configs/ composes; typos and bad combinations are errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import CONFIG_DIR, OptimConfig, TrainConfig, from_dict, load_config, to_yaml
from trainer.distributed import lr_factor
from trainer.errors import ConfigError


def _hydra_files() -> list[Path]:
    """Every Hydra config file; configs/benchmark/ holds `seqrec benchmark` grids, not training configs."""
    return [p for p in sorted(Path(CONFIG_DIR).rglob("*.yaml")) if p.relative_to(CONFIG_DIR).parts[0] != "benchmark"]


def _group_files() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for path in _hydra_files():
        rel = path.relative_to(CONFIG_DIR)
        if len(rel.parts) == 2:
            groups.setdefault(rel.parts[0], []).append(rel.stem)
    return groups


def test_every_config_file_composes() -> None:
    groups = _group_files()
    composed = 1
    load_config([])
    for group, names in groups.items():
        for name in names:
            cfg = load_config([f"{group}={name}"])
            assert isinstance(cfg, TrainConfig)
            composed += 1
    total = len(_hydra_files())
    assert composed == total, f"composed {composed} of {total} config files"
    assert {"model", "data", "optim", "experiment"} <= set(groups)


def test_overrides_apply_and_round_trip() -> None:
    cfg = load_config(["trainer.max_steps=7", "model.dim=32", "eval.ks=[5,10]"])
    assert cfg.trainer.max_steps == 7 and cfg.model.dim == 32 and cfg.eval.ks == [5, 10]
    assert "max_steps: 7" in to_yaml(cfg)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["trainer.stpes=5"], "stpes"),
        (["+trainer.stpes=5"], "stpes"),
        (["model.dim=abc"], "model.dim"),
        (["model.objective.loss=nope"], "model.objective.loss"),
        (["model.objective.loss=bce", "data.negatives=none"], "data.negatives"),
        (["model.dim=36", "model.encoder.num_heads=8"], "model.encoder.num_heads"),
        (["model.encoder.num_blockz=3"], "num_blockz"),
        (["model.objective.los=bce"], "los"),
        (["model.encoder.dropout=1.5"], "model.encoder.dropout"),
        (["model.objective.temperature=0"], "model.objective.temperature"),
        (["model=sasrex"], "model/sasrex"),
        (["model.dim=50"], "multiple of 4"),
        (["optim.accumulate=2"], "trainer.pipeline=false"),
        (["trainer.resume=true", "trainer.init_from=x"], "trainer.init_from"),
        (["experiment=does_not_exist"], "experiment/does_not_exist"),
        (["eval.ks=[5]"], "eval.ks"),
        (["trainer.sharding=diagonal"], "replicated"),
        (["data.window=oldest"], "data.window"),
        (["optim.loss_weight=token"], "optim.loss_weight"),
        (["model.encoder.length_groups=0"], "model.encoder.length_groups"),
    ],
)
def test_bad_config_is_one_clear_error(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        load_config(overrides)


def test_from_dict_rejects_unknown_model_name_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="did you mean 'sasrec'"):
        from_dict({"model": {"name": "sasrecc"}})


def test_every_registered_model_has_its_config_file() -> None:
    """configs/model/<name>.yaml exists for every registered model (and composes to it), and nothing else."""
    from modules import registry

    models = _group_files()["model"]
    assert sorted(models) == registry.names()
    for name in models:
        assert load_config([f"model={name}"]).model.name == name


def test_from_dict_rejects_unknown_section() -> None:
    with pytest.raises(ConfigError, match="tranier"):
        from_dict({"tranier": {"epochs": 1}})


def test_lr_schedule_warmup_then_cosine() -> None:
    optim = OptimConfig(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, optim, 110) == pytest.approx(0.1)
    assert lr_factor(9, optim, 110) == pytest.approx(1.0)
    assert lr_factor(60, optim, 110) == pytest.approx(0.55)  # half-way through the cosine
    assert lr_factor(110, optim, 110) == pytest.approx(0.1)
    assert lr_factor(50, OptimConfig(warmup_steps=0, schedule="constant"), 100) == 1.0


def test_window_choices_match_the_loader() -> None:
    from trainer import config
    from trainer.data import loader

    assert config.WINDOWS == loader.WINDOWS


def test_run_folders_from_before_the_registry_still_load() -> None:
    """A flat SASRec ``model`` section (pre-registry config.yaml) reads into today's components, same values."""
    old = {"model": {"name": "sasrec", "dim": 32, "num_blocks": 3, "dropout": 0.1, "loss": "bce",
                     "softmax_chunk": 0, "length_groups": 2, "tie_weights": True},
           "eval": {"filter_seen": True}}
    cfg = from_dict(old)
    assert (cfg.model.dim, cfg.model.encoder.num_blocks, cfg.model.encoder.dropout) == (32, 3, 0.1)
    assert (cfg.model.objective.loss, cfg.model.objective.softmax_chunk, cfg.model.encoder.length_groups) == (
        "bce", 0, 2)
    assert cfg.eval.protocol == "seen_removed"
