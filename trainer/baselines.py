"""Fit the non-neural baselines on a dataset folder's training part: most-popular, item-to-item co-occurrence,
item-KNN (cosine, top-k neighbours) and EASE (Steck 2019, closed form).

Each returns a module with the recommender interface (`encode`, `item_embeddings`), so ``seqrec evaluate
--baseline NAME`` ranks it with exactly the protocol and metrics of trained models. The item-item baselines hold
a dense ``(N + 1)^2`` matrix: 4 bytes x (N + 1)^2 (ML-1M 47 MB, Beauty 0.6 GB), refused above `MAX_DENSE_ITEMS`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
from torch import nn

from trainer.data.schema import ITEMS, SEQUENCES, read_manifest
from trainer.errors import ConfigError

BASELINES = ("popularity", "cooccurrence", "itemknn", "ease")
MAX_DENSE_ITEMS = 30000


@dataclasses.dataclass(kw_only=True)
class BaselineConfig:
    """Hyper-parameters of the baselines (``--param KEY=VALUE``)."""

    ease_lambda: float = 500.0  # L2 weight of EASE (the paper's ML-20M value)
    knn_neighbours: int = 100  # neighbours kept per item by item-KNN
    knn_shrink: float = 10.0  # cosine shrinkage: C_ij / (sqrt(d_i d_j) + shrink)


def train_matrix(folder: str | Path, num_items: int) -> sp.csr_matrix:
    """Binary users x (N + 1) matrix of the training part (``items[:train_end]``) of every sequence."""
    table = pq.read_table(Path(folder) / SEQUENCES, columns=["items", "train_end"])
    items = table.column("items").combine_chunks()
    offsets = items.offsets.to_numpy().astype(np.int64)
    flat = items.values.to_numpy().astype(np.int64)
    end = table.column("train_end").to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    keep = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths) < np.repeat(end, lengths)
    rows = np.repeat(np.arange(len(lengths)), lengths)[keep]
    x = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows, flat[keep])), shape=(len(lengths), num_items + 1))
    x.data[:] = 1.0  # repeats count once
    return x


def _gram(x: sp.csr_matrix) -> np.ndarray:
    return np.asarray((x.T @ x).todense(), dtype=np.float32)


def cooccurrence(x: sp.csr_matrix) -> torch.Tensor:
    """``C[i, j]`` = users with both i and j in training; the diagonal is 0."""
    c = _gram(x)
    np.fill_diagonal(c, 0.0)
    return torch.from_numpy(c)


def item_knn(x: sp.csr_matrix, neighbours: int, shrink: float) -> torch.Tensor:
    """Shrunk cosine similarity, each item keeping its ``neighbours`` most similar items (rows pruned)."""
    c = _gram(x)
    norms = np.sqrt(np.diag(c)).astype(np.float32)
    denom = np.outer(norms, norms) + shrink
    s = np.divide(c, denom, out=np.zeros_like(c), where=denom > 0)  # items never trained on: 0
    np.fill_diagonal(s, 0.0)
    sim = torch.from_numpy(s)
    k = min(neighbours, sim.shape[1])
    top = torch.topk(sim, k, dim=1)
    return torch.zeros_like(sim).scatter_(1, top.indices, top.values)


def ease(x: sp.csr_matrix, lam: float) -> torch.Tensor:
    """EASE: ``B = I - P diagMat(1 / diag(P))`` with ``P = (X^T X + lam I)^-1``, i.e. diag(B) = 0."""
    g = torch.from_numpy(_gram(x)).to(torch.float64)
    g.diagonal().add_(lam)
    p = torch.linalg.inv(g)
    del g  # peak memory: two float64 (N + 1)^2 matrices
    p.div_(-p.diagonal().clone().unsqueeze(0))
    p.fill_diagonal_(0.0)
    return p.to(torch.float32)


def fit(name: str, folder: str | Path, cfg: BaselineConfig) -> nn.Module:
    """The fitted baseline ``name`` (one of `BASELINES`) of a dataset folder."""
    from modules.item_to_item import ItemToItem
    from modules.popularity import Popularity

    manifest = read_manifest(folder)
    if name == "popularity":
        pop = pq.read_table(Path(folder) / ITEMS, columns=["popularity"]).column("popularity").to_numpy()
        return Popularity(torch.from_numpy(np.concatenate([[0], pop]).astype(np.float32)))
    if name not in BASELINES:
        raise ConfigError(f"baseline {name!r} is unknown; choose one of {', '.join(BASELINES)}")
    if manifest.num_items > MAX_DENSE_ITEMS:
        raise ConfigError(
            f"{folder}: {manifest.num_items} items; the {name} baseline holds a dense item x item matrix and "
            f"supports at most {MAX_DENSE_ITEMS}"
        )
    x = train_matrix(folder, manifest.num_items)
    if name == "cooccurrence":
        return ItemToItem(cooccurrence(x), last_item_only=True)
    if name == "itemknn":
        return ItemToItem(item_knn(x, cfg.knn_neighbours, cfg.knn_shrink))
    return ItemToItem(ease(x, cfg.ease_lambda))
