"""Two real ranks (gloo on CPU, torchrun) train SASRec at max_len 1,000 with the long-sequence attention
backends on histories of up to 1,200 events, and the loss falls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, train_overrides

pytestmark = [pytest.mark.integration, pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic users with lognormal histories of mean 400 events, up to 1,200 (so max_len 1,000 truncates)."""
    from trainer.data.prepare import PrepareConfig, prepare
    from trainer.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("long")
    config = SynthConfig(users=96, items=200, categories=8, seed=11, mean_length=400, length_sigma=0.8,
                         min_length=20, max_length=1200)
    generate(config, root / "raw", progress=False)
    prepare(PrepareConfig(format="synthetic", input=root / "raw", output=root / "dataset"))
    return root / "dataset"


def test_two_ranks_train_at_max_len_1000(long_dataset: Path, tmp_path: Path) -> None:
    """Linear attention mixed with a local window, output dropout and checkpointed blocks, under DDP; the exact
    backends' equality with SDPA is covered in tests/modules."""
    backend = ["model.encoder.attn_backend=linear", "model.encoder.attention.window=32",
               "model.encoder.attention.local_mix=0.5", "model.encoder.attention.dropout=output",
               "model.encoder.attention.checkpoint=true", "model.encoder.dropout=0.1"]
    overrides = train_overrides(
        long_dataset, tmp_path, "trainer.run_id=long", "data.max_len=1000", "data.batch_size=8",
        "trainer.epochs=4", "trainer.log_every=1", "optim.lr=0.005", *backend,
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "trainer/train.py", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    metrics = json.loads((tmp_path / "default" / "long" / "metrics.json").read_text())
    losses = metrics["train_losses"]
    assert len(losses) >= 8 and all(loss == loss for loss in losses), losses  # logged, no NaN
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), f"loss did not fall: {losses}"
    assert metrics["valid"]["users"] == 96
