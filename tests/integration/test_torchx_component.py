"""The torchx component builds the same torchrun launch as `dist.ddp` (the launch itself is tested in
test_distributed_training.py), with our script, overrides and thread settings."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def _components():
    spec = importlib.util.spec_from_file_location("seqrec_components", REPO / "torchx" / "components.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_component_builds_a_two_rank_torchrun_app() -> None:
    app = _components().train("trainer.max_steps=5", "model.dim=16", j="1x2", omp_threads=2)
    (role,) = app.roles
    command = " ".join(role.args)
    assert "trainer/train.py" in command and "trainer.max_steps=5 model.dim=16" in command
    assert "--nproc_per_node 2" in command or "--nproc_per_node=2" in command
    assert role.env["OMP_NUM_THREADS"] == "2"
    assert not (REPO / "torchx" / "__init__.py").exists(), "a torchx/__init__.py would shadow the torchx package"


def test_max_restarts_reaches_torchrun() -> None:
    """dist.ddp has no --max-restarts option; torchrun reads it from PET_MAX_RESTARTS (the elastic restart itself is
    tested in test_exact_resume.py)."""
    (role,) = _components().train("trainer.max_steps=5", max_restarts=3).roles
    assert role.env["PET_MAX_RESTARTS"] == "3"
    assert _components().train().roles[0].env["PET_MAX_RESTARTS"] == "0"
