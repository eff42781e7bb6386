"""A trained two-tower run exports each tower as TorchScript and ONNX that score as the eager model does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from serving.export import ExportConfig, export_run, load_trained
from tests.conftest import train_overrides
from trainer.config import load_config
from trainer.train import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("towers")
    overrides = [o for o in train_overrides(tiny_dataset, out, "model=two_tower", "trainer.run_id=t",
                                            "trainer.test_at_end=false") if "encoder.dropout" not in o]
    run = Path(run_training(load_config(overrides))["run_dir"])
    return run, export_run(ExportConfig(run=run, output=out / "export", ann="flat"))


def test_both_towers_are_exported_and_agree_with_the_eager_model(exported: tuple[Path, dict]) -> None:
    run, meta = exported
    folder = Path(meta["output"])
    for tower in ("user_tower", "item_tower"):
        record = meta["towers"][tower]
        assert (folder / record["onnx"]).is_file() and (folder / record["torchscript"]).is_file()
        assert record["onnx_max_abs_error"] < 1e-5 and record["torchscript_max_abs_error"] < 1e-5


def test_onnx_item_tower_reproduces_the_served_item_matrix(exported: tuple[Path, dict]) -> None:
    run, meta = exported
    model = load_trained(run).model
    ids = torch.arange(1, model.num_items + 1)
    session = onnxruntime.InferenceSession(str(Path(meta["output"]) / "item_tower.onnx"))
    got = session.run(None, {"ids": ids.numpy(), "codes": model.codes_of(ids).numpy()})[0]
    served = torch.jit.load(str(Path(meta["output"]) / "model.pt"))
    one = torch.ones(1, dtype=torch.int64)
    matrix = served.encode_and_catalogue(one, one, one)[1] if hasattr(served, "encode_and_catalogue") else None
    expected = model.item_embeddings(ids).detach().numpy()
    assert np.abs(got - expected).max() < 1e-5
    if matrix is not None:  # INT8 rows: close, not equal
        assert np.abs(matrix.numpy() - expected).max() < 0.05
