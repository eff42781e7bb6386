"""The fixed tiny setting every registered model is checked on: its config, a batch, and a few training steps.

Shared by tests/modules/test_every_model.py and scripts/golden_losses.py (which writes the golden files), so a
refactor that changes a model's numerics shows up as a golden-loss mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from modules import registry
from modules.batch import Batch

NUM_ITEMS, MAX_LEN, DIM, STEPS, LR = 40, 12, 16, 5, 1e-2
GOLDEN = Path(__file__).resolve().parent / "golden"
# (history + last target) of each tiny example; lengths 9, 2, 5, 12 (every model sees padding and a full row)
SEQUENCES = [
    [3, 4, 5, 6, 7, 8, 9, 10, 11],
    [20, 21],
    [30, 31, 32, 33, 34],
    [1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 2, 6],
]


def retrieval_models() -> list[str]:
    """Registered models of the retrieval task (rankers have their own suite)."""
    return [name for name in registry.names() if registry.get(name).task == "retrieval"]


def tiny_config(name: str) -> Any:
    """The model's own defaults at width ``DIM``."""
    return registry.get(name).config(dim=DIM)


def build(name: str, seed: int = 0) -> Any:
    """The model ``name`` in the tiny setting, initialised from ``seed``."""
    torch.manual_seed(seed)
    return registry.build(tiny_config(name), num_items=NUM_ITEMS, max_len=MAX_LEN)


def batch(kind: str = "causal", num_negatives: int = 2, seed: int = 0) -> Batch:
    """The tiny batch: ``causal`` (a target per position) or ``last`` (the final item), with negatives and
    increasing timestamps (one day apart)."""
    gen = torch.Generator().manual_seed(seed)
    history = [s[:-1] for s in SEQUENCES]
    targets = [s[1:] for s in SEQUENCES] if kind == "causal" else [s[-1:] for s in SEQUENCES]
    negatives = torch.randint(1, NUM_ITEMS + 1, (len(SEQUENCES) * num_negatives,), generator=gen)
    lengths = [len(h) for h in history] + [len(t) for t in targets] + [num_negatives] * len(SEQUENCES)
    values = [i for h in history for i in h] + [i for t in targets for i in t] + negatives.tolist()
    sparse = KeyedJaggedTensor(
        keys=["history", "target", "negatives"], values=torch.tensor(values), lengths=torch.tensor(lengths)
    )
    times = torch.tensor([86_400 * (j + 1) for h in history for j in range(len(h))], dtype=torch.int64)
    return Batch(sparse=sparse, user_idx=torch.arange(len(SEQUENCES)), kind=kind, timestamps=times)


def train_losses(name: str, steps: int = STEPS) -> list[float]:
    """Losses of ``steps`` Adam steps on the tiny causal batch, from seed 0 (dropout seeded too)."""
    model = build(name).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    data = batch()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss, _ = model(data)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.json"


def write_golden(name: str) -> Path:
    """Record the model's current tiny-setting losses as its golden file."""
    GOLDEN.mkdir(parents=True, exist_ok=True)
    path = golden_path(name)
    record = {"model": name, "torch": torch.__version__.split("+")[0], "steps": STEPS, "lr": LR,
              "num_items": NUM_ITEMS, "max_len": MAX_LEN, "dim": DIM, "losses": train_losses(name)}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
