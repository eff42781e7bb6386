"""Fixtures shared by the serving tests: a tiny trained run with an fp32-dense export in ``<run>/export``."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.export import ExportConfig, export_run
from tests.conftest import train_overrides
from trainer.config import load_config
from trainer.train import run_training


@pytest.fixture(scope="session")
def exported(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny SASRec trained on ``tiny_dataset``, exported (INT8 tables, fp32 dense)."""
    out = tmp_path_factory.mktemp("served_run")
    result = run_training(load_config(train_overrides(tiny_dataset, out, "trainer.run_id=served",
                                                      "trainer.test_at_end=false")))
    run = Path(result["run_dir"])
    export_run(ExportConfig(run=run, output=run / "export", evaluate=False, dense="fp32"))
    return run
