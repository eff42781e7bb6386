"""Growing a row-wise sharded table on two real ranks (gloo): each rank copies the checkpoint rows of its own shard.

A 1-rank checkpoint trained on v1 is fine-tuned on v2 (more items) by 2 ranks with zero learning rates, so the
checkpoint it writes holds exactly what the ranks loaded; read back on 1 rank, its first rows equal v1's table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import train_overrides
from tests.integration.test_distributed_training import _run
from tests.trainer.test_growth import tables_after_init, versions  # noqa: F401  (fixture)
from trainer.config import load_config
from trainer.data.schema import read_manifest
from trainer.train import run_training

pytestmark = [pytest.mark.integration, pytest.mark.distributed, pytest.mark.slow]


def test_two_ranks_grow_a_row_wise_table(versions, tmp_path: Path) -> None:  # noqa: F811
    v1, v2, _ = versions
    base = run_training(load_config(train_overrides(v1, tmp_path, "trainer.run_id=base", "trainer.max_steps=6",
                                                    "trainer.test_at_end=false")))
    (key, old), = tables_after_init(v1, tmp_path, "trainer.run_id=same", f"trainer.init_from={base['run_dir']}").items()
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "trainer/train.py",
          *train_overrides(v2, tmp_path, "trainer.run_id=grown2", f"trainer.init_from={base['run_dir']}",
                           "trainer.sharding=row_wise", "trainer.init_new_items=mean", "trainer.epochs=1",
                           "optim.lr=1e-12", "optim.sparse_lr=1e-12", "trainer.test_at_end=false")], tmp_path)
    grown = tables_after_init(v2, tmp_path, "trainer.run_id=check",
                              f"trainer.init_from={tmp_path / 'default' / 'grown2'}")[key]
    rows = read_manifest(v1).num_items + 1
    assert grown.shape[0] == read_manifest(v2).num_items + 1
    assert torch.equal(grown[:rows], old)
    assert torch.allclose(grown[rows:], old[1:].mean(0).expand(grown.shape[0] - rows, -1), atol=1e-6)
