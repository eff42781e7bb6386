"""The ``impressions`` loader kind: ranking examples from a dataset folder's ``impressions.parquet``.

One example per impression of the split: (user, the ``max_len`` most recent events strictly before the request
with their action codes and times, the shown item as candidate, one label per head, the request time). Histories
are gathered from ``sequences.parquet`` by position (``hist_end``), so they are never copied per impression on
disk. A user's first impression has an empty history (``lengths`` 0): rankers must accept it.

Sharding: the split's examples (shuffled per epoch with the seed when ``shuffle``) are cut into
``world_size * K`` batches of near-equal size and rank ``r`` takes batches ``r, r + world_size, ...``: every
rank yields the same K, nothing is dropped or repeated. Every batch is a function of (seed, epoch, batch index),
so resuming is skipping ``batches_done`` batches. The split and the histories are held in memory (KuaiRand-Pure:
228K impressions, ~20 MB); datasets far larger need the row-group streaming of `trainer.data.loader`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from modules.batch import Batch
from trainer.data import sampling
from trainer.data.impressions import read_label_names
from trainer.data.loader import KEYS, LoaderConfig, _gather
from trainer.data.schema import ACTIONS_FIELD, IMPRESSIONS, SEQUENCES
from trainer.errors import ConfigError, DataError

SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
STREAM_IMPRESSION_ORDER = 101  # a random stream of its own (see `trainer.data.sampling.batch_rng`)


def fallback_config(config: LoaderConfig) -> LoaderConfig:
    """``ranker`` rows (positives with sampled negatives) for a dataset without impressions."""
    negatives = config.negatives if config.negatives in ("uniform", "popularity") else "uniform"
    return dataclasses.replace(config, kind="ranker", negatives=negatives)


@dataclasses.dataclass
class _Histories:
    """Every user's whole sequence as flat arrays (``offsets: (U + 1,)``)."""

    offsets: np.ndarray
    items: np.ndarray
    actions: np.ndarray
    timestamps: np.ndarray

    @staticmethod
    def read(path: Path) -> _Histories:
        names = pq.read_schema(path).names
        columns = ["items", "timestamps"] + (["actions"] if ACTIONS_FIELD.name in names else [])
        table = pq.read_table(path, columns=columns)
        items = table.column("items").combine_chunks()
        offsets = items.offsets.to_numpy().astype(np.int64)
        timestamps = table.column("timestamps").combine_chunks().values.to_numpy().astype(np.int64)
        if "actions" in columns:
            actions = table.column("actions").combine_chunks().values.to_numpy().astype(np.int64)
        else:
            actions = np.zeros(len(timestamps), dtype=np.int64)
        return _Histories(offsets, items.values.to_numpy().astype(np.int64), actions, timestamps)


class ImpressionDataset:
    """The examples of one split on this rank; iterate for one epoch of `Batch` es (module docstring)."""

    def __init__(self, folder: str | Path, config: LoaderConfig, rank: int = 0, world_size: int = 1) -> None:
        self.folder, self.config, self.rank, self.world_size = Path(folder), config, rank, world_size
        self.heads = _heads(self.folder, config.heads)
        path = self.folder / IMPRESSIONS
        table = pq.read_table(path, columns=["user_idx", "item_idx", "timestamp", "hist_end", "split", *self.heads],
                              filters=[("split", "=", SPLIT_CODES[config.split])])
        if table.num_rows == 0:
            raise DataError(f"no impressions in split {config.split!r}", file=path, field="split")
        self.user = table.column("user_idx").to_numpy().astype(np.int64)
        self.item = table.column("item_idx").to_numpy().astype(np.int64)
        self.time = table.column("timestamp").to_numpy().astype(np.int64)
        self.hist_end = table.column("hist_end").to_numpy().astype(np.int64)
        self.labels = np.stack([table.column(h).to_numpy().astype(np.float32) for h in self.heads], axis=1)
        self.histories = _Histories.read(self.folder / SEQUENCES)
        lengths = np.diff(self.histories.offsets)
        if self.user.max() >= len(lengths) or (self.hist_end > lengths[self.user]).any():
            row = int(np.flatnonzero((self.user >= len(lengths)) | (self.hist_end > lengths[np.minimum(
                self.user, len(lengths) - 1)]))[0])
            raise DataError("hist_end beyond the user's sequence (dataset files out of step?)", file=path,
                            row=row + 1, field="hist_end")
        self.num_examples = len(self.user)
        self.num_skipped = 0
        per_rank = -(-self.num_examples // (config.batch_size * world_size))
        self._num_batches = per_rank
        self.mean_targets_per_batch = self.num_examples / (self._num_batches * world_size)
        self.epoch, self._skip = 0, 0

    def num_batches(self) -> int:
        """Batches this rank yields per epoch (the same on every rank)."""
        return self._num_batches

    def __len__(self) -> int:
        return self._num_batches

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle the next iteration uses."""
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next iteration of ``epoch`` skip its first ``batches_done`` batches."""
        self.epoch, self._skip = int(epoch), int(batches_done)

    def __iter__(self) -> Iterator[Batch]:
        order = np.arange(self.num_examples)
        if self.config.shuffle:
            rng = sampling.batch_rng(self.config.seed, self.epoch, 0, 0, STREAM_IMPRESSION_ORDER, 0)
            order = rng.permutation(self.num_examples)
        parts = np.array_split(order, self._num_batches * self.world_size)
        skip, self._skip = self._skip, 0
        for index in range(self.rank + skip * self.world_size, len(parts), self.world_size):
            yield self.batch(parts[index])

    def batch(self, rows: np.ndarray) -> Batch:
        """The `Batch` of examples ``rows`` (sorted by user and time, as on disk, when not shuffled)."""
        h = self.histories
        lengths = np.minimum(self.hist_end[rows], self.config.max_len)
        starts = h.offsets[self.user[rows]] + self.hist_end[rows] - lengths
        history, _ = _gather(h.items, starts, lengths)
        actions, _ = _gather(h.actions, starts, lengths)
        times, _ = _gather(h.timestamps, starts, lengths)
        n = len(rows)
        sparse = KeyedJaggedTensor(
            keys=KEYS,
            values=torch.from_numpy(np.concatenate([history, self.item[rows]])),
            lengths=torch.from_numpy(np.concatenate([lengths, np.ones(n, np.int64), np.zeros(n, np.int64)])),
        )
        return Batch(sparse=sparse, user_idx=torch.from_numpy(self.user[rows]), kind="impressions",
                     labels=torch.from_numpy(self.labels[rows]), actions=torch.from_numpy(actions),
                     timestamps=torch.from_numpy(times), request_time=torch.from_numpy(self.time[rows]))


class ImpressionLoader:
    """What the trainer and evaluators iterate: ``iter(loader)`` yields the dataset's batches; ``.dataset``."""

    def __init__(self, dataset: ImpressionDataset) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)


def build_impression_loader(folder: str | Path, config: LoaderConfig, rank: int = 0,
                            world_size: int = 1) -> ImpressionLoader:
    """The loader of ``kind="impressions"`` batches (in this process: the split is held in memory)."""
    return ImpressionLoader(ImpressionDataset(folder, config, rank, world_size))


def _heads(folder: Path, heads: tuple[str, ...]) -> list[str]:
    available = read_label_names(folder)
    unknown = [h for h in heads if h not in available]
    if unknown:
        raise ConfigError(f"model.heads {unknown} are not label columns of {folder / IMPRESSIONS} "
                          f"(it has {available})")
    return list(heads) or available
