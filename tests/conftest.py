"""Shared test fixtures: where the real datasets live, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Keep every test process to one intra-op thread: the CI machine has 2 cores and distributed tests run 2 ranks.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real public datasets (read-only); tests read them by this path, never copy them."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset folder made by the real pipeline (synth -> prepare), shared by a session."""
    from trainer.data.prepare import PrepareConfig, prepare
    from trainer.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("tiny")
    generate(SynthConfig(users=600, items=300, categories=10, seed=3, mean_length=12, max_length=60), root / "raw",
             progress=False)
    prepare(PrepareConfig(format="synthetic", input=root / "raw", output=root / "dataset"))
    return root / "dataset"


def train_overrides(dataset: Path, out: Path, *extra: str) -> list[str]:
    """Overrides for a fast tiny training run (shared by the trainer and integration tests)."""
    return [
        f"data.path={dataset}",
        f"trainer.output_dir={out}",
        "data.batch_size=32",
        "data.eval_batch_size=128",
        "data.max_len=20",
        "model.dim=16",
        "model.encoder.dropout=0.0",
        "trainer.epochs=2",
        "trainer.progress=false",
        "trainer.log_every=5",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_impressions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset folder with impressions (view / cart / purchase labels), leave-one-out."""
    from trainer.data.prepare import PrepareConfig, prepare
    from trainer.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("tiny_impressions")
    generate(SynthConfig(users=400, items=200, categories=8, seed=5, mean_length=10, max_length=40, impressions=3),
             root / "raw", progress=False)
    prepare(PrepareConfig(format="synthetic", input=root / "raw", output=root / "dataset"))
    return root / "dataset"


def ranking_overrides(dataset: Path, out: Path, model: str, *extra: str) -> list[str]:
    """Overrides for a fast tiny ranker training run on `tiny_impressions`."""
    return [
        f"model={model}", f"data.path={dataset}", f"trainer.output_dir={out}", "model.dim=8",
        "model.heads=[view,cart]", "model.user_buckets=512", "data.batch_size=64", "data.eval_batch_size=256",
        "data.max_len=20", "trainer.epochs=2", "trainer.progress=false", "trainer.log_every=10",
        "optim.warmup_steps=0", "optim.schedule=constant", "optim.lr=0.003", *extra,
    ]
