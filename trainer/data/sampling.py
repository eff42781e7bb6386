"""Negative samplers for the loader, with the log-probabilities that logQ correction needs.

A sampled-softmax loss over ``{target} ∪ negatives`` is biased towards popular items when negatives are drawn
non-uniformly; subtracting ``log q(id)`` from each logit removes that bias. So every sampler returns the
log-probability of the ids it draws, and `logq` gives it for any id (the loader uses it for targets too).

* `UniformSampler` -- ids uniform on ``1..N``.
* `PopularitySampler` -- ``q(i) ∝ popularity(i) ** alpha`` (inverse-CDF sampling: one ``searchsorted`` per
  batch, vectorised; building an alias table needs a Python loop over every item).
* `InBatch` -- draws nothing (the other examples' targets are the negatives); its `logq` is the probability of
  an item appearing as a target, i.e. its train popularity share, so the loss can correct in-batch bias too.

Id 0 is padding and is never drawn. Items whose train popularity is 0 (seen only in validation/test) count as 1,
so every real item can be drawn and has a finite log-probability. Samplers hold no random state: callers pass a
`numpy.random.Generator` from `batch_rng`, so a batch's negatives depend only on (seed, epoch, rank, worker, batch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow.parquet as pq

from trainer.data.schema import ITEMS
from trainer.errors import ConfigError, DataError

NEGATIVES = ("none", "uniform", "popularity", "in_batch")

# Stream tags keep the random streams of one (seed, epoch, rank, worker) independent of each other.
STREAM_ROW_GROUP_ORDER = 0
STREAM_ROW_PERMUTATION = 1
STREAM_BATCH_ORDER = 2
STREAM_NEGATIVES = 3
STREAM_WINDOW = 4
STREAM_AUGMENT = 5


def batch_rng(seed: int, epoch: int, rank: int, worker: int, stream: int, index: int) -> np.random.Generator:
    """A generator that depends only on its arguments, so any batch can be rebuilt without replaying others."""
    return np.random.default_rng([seed, epoch, rank, worker, stream, index])


class NegativeSampler(Protocol):
    """What the loader needs from a sampler."""

    num_items: int

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` ids ``(n,) int64`` in ``1..num_items`` and their log-probabilities ``(n,) float32``."""
        ...

    def logq(self, ids: np.ndarray) -> np.ndarray:
        """Log-probability ``float32`` of each id under this sampler (``-inf`` for padding id 0)."""
        ...


class UniformSampler:
    """Ids uniform on ``1..num_items``."""

    def __init__(self, num_items: int) -> None:
        if num_items < 1:
            raise ConfigError(f"uniform negatives need at least one item, got num_items={num_items}")
        self.num_items = int(num_items)
        self._logq = np.float32(-math.log(self.num_items))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ids = rng.integers(1, self.num_items + 1, size=n, dtype=np.int64)
        return ids, np.full(n, self._logq, dtype=np.float32)

    def logq(self, ids: np.ndarray) -> np.ndarray:
        out = np.full(len(ids), self._logq, dtype=np.float32)
        out[np.asarray(ids) == 0] = -np.inf
        return out


def _log_probs(popularity: np.ndarray, alpha: float) -> np.ndarray:
    """``log q`` indexed by item id (entry 0 = padding = ``-inf``) for ``q ∝ max(pop, 1) ** alpha``."""
    weights = np.maximum(np.asarray(popularity, dtype=np.float64), 1.0) ** alpha
    log_q = np.empty(len(weights) + 1, dtype=np.float64)
    log_q[0] = -np.inf
    log_q[1:] = np.log(weights) - np.log(weights.sum())
    return log_q


class PopularitySampler:
    """Ids drawn with probability ``∝ popularity ** alpha``.

    Args:
        popularity: ``(N,)`` train counts; entry ``i`` belongs to item id ``i + 1`` (items.parquet order).
        alpha: 1 samples like the data; 0 is uniform; 0.5-0.75 flattens the head.
    """

    def __init__(self, popularity: np.ndarray, alpha: float = 1.0) -> None:
        if len(popularity) < 1:
            raise ConfigError("popularity negatives need at least one item")
        if not math.isfinite(alpha) or alpha < 0:
            raise ConfigError(f"popularity_alpha must be a finite number >= 0, got {alpha}")
        self.num_items = len(popularity)
        self._log_q = _log_probs(popularity, alpha)
        cdf = np.cumsum(np.exp(self._log_q[1:]))
        self._cdf = cdf / cdf[-1]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self._cdf, rng.random(n), side="right")
        ids = np.minimum(pos, self.num_items - 1).astype(np.int64) + 1  # guards u == 1.0 after rounding
        return ids, self._log_q[ids].astype(np.float32)

    def logq(self, ids: np.ndarray) -> np.ndarray:
        return self._log_q[np.asarray(ids, dtype=np.int64)].astype(np.float32)


class InBatch:
    """In-batch negatives: draws nothing; `logq` is each item's share of train interactions."""

    def __init__(self, popularity: np.ndarray) -> None:
        self.num_items = len(popularity)
        self._log_q = _log_probs(popularity, 1.0)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)

    def logq(self, ids: np.ndarray) -> np.ndarray:
        return self._log_q[np.asarray(ids, dtype=np.int64)].astype(np.float32)


def read_popularity(folder: str | Path) -> np.ndarray:
    """``(N,) int64`` train popularity from ``items.parquet``, checking that row i holds item id i + 1."""
    path = Path(folder) / ITEMS
    if not path.is_file():
        raise DataError("missing items.parquet", file=path)
    table = pq.read_table(path, columns=["item_idx", "popularity"])
    item_idx = table.column("item_idx").to_numpy()
    if not np.array_equal(item_idx, np.arange(1, len(item_idx) + 1)):
        bad = int(np.flatnonzero(item_idx != np.arange(1, len(item_idx) + 1))[0])
        raise DataError(f"item_idx must be 1..N in row order, found {item_idx[bad]}", file=path, row=bad + 1,
                        field="item_idx")
    popularity = table.column("popularity").to_numpy(zero_copy_only=False).astype(np.int64)
    if (popularity < 0).any():
        bad = int(np.flatnonzero(popularity < 0)[0])
        raise DataError("negative popularity", file=path, row=bad + 1, field="popularity")
    return popularity


def build_sampler(kind: str, folder: str | Path, num_items: int, alpha: float = 1.0) -> NegativeSampler | None:
    """The sampler for ``LoaderConfig.negatives``; None for ``"none"``. Reads popularity only when needed."""
    if kind not in NEGATIVES:
        raise ConfigError(f"negatives must be one of {NEGATIVES}, got {kind!r}")
    if kind == "none":
        return None
    if kind == "uniform":
        return UniformSampler(num_items)
    popularity = read_popularity(folder)
    if len(popularity) != num_items:
        raise DataError(f"items.parquet has {len(popularity)} rows but the manifest counts {num_items} items",
                        file=Path(folder) / ITEMS)
    return PopularitySampler(popularity, alpha) if kind == "popularity" else InBatch(popularity)
