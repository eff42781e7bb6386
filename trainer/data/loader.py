"""Streaming loader: a dataset folder (`trainer.data.schema`) -> `Batch` es, sharded by rank and worker, resumable.

Examples (one per user and split; ``L = max_len``; a user without one is skipped and counted in ``num_skipped``):

* ``split="train", kind="causal"``: ``seq = items[:train_end][-(L + 1):]``, history ``seq[:-1]``, target
  ``seq[1:]`` (the next item at every position). Needs ``train_end >= 2``. With ``window="random"`` a user with
  more than ``L + 1`` train items gets, each epoch, ``L + 1`` consecutive train items starting at a uniformly
  drawn position instead of the last ones, so over the epochs training sees their older items too.
* ``kind="last"``: history = the last ``L`` items before the cut, target = the items after it: train cuts at
  ``train_end - 1`` (target = last train item), valid at ``train_end`` (targets ``items[train_end:valid_end]``),
  test at ``valid_end`` (targets ``items[valid_end:]``). Needs a non-empty history and at least one target.
* ``kind="ranker"``: the ``last`` example turned into ``1 + ranker_negatives`` rows that share the history: the
  first target as candidate with label 1, then sampled negatives with label 0. ``batch_size`` counts users, so a
  ranker batch has ``batch_size * (1 + ranker_negatives)`` rows.

Exactly once: row groups of ``sequences.parquet`` are partitioned across ranks (balanced by example count, the
same answer on every rank), then each rank's row groups across its loader workers, so per epoch every user's
example is produced by exactly one (rank, worker) exactly once. For causal training it covers every train target
inside the window: positions ``max(1, train_end - L) .. train_end - 1``; older positions are truncated away
(``window="last"``) or reached in other epochs (``window="random"``).

Even batches: each process computes every rank's and worker's example count from the Parquet metadata and the
``train_end``/``valid_end`` columns (no communication). Every rank yields the same number K of batches (the
largest rank's count), a smaller rank cutting its examples into K smaller batches: nothing dropped or repeated,
and no rank waits forever in a collective. `SequenceDataset.num_batches` returns K.

Length bucketing: ``bucket_batches`` batches' worth of examples are buffered, sorted by history length, cut into
batches, and the batches shuffled. Nothing is padded on the host (`Batch` is jagged); consumers that pad to the
batch maximum waste far less.

Resume: every batch is a deterministic function of (seed, epoch, rank, worker, batch index), so the state is
just ``{"epoch", "yielded"}`` per worker (torchdata's `StatefulDataLoader` protocol). A restored iteration skips
whole row groups and buffers by count before building any tensor. Call `SequenceDataset.set_epoch` each epoch
(like `DistributedSampler`); a restored state applies to the next iteration only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from trainer.data import sampling
from trainer.data.augment import Augmentation, augment_block
from modules.batch import KINDS, Batch
from trainer.data.schema import ACTIONS_FIELD, IMPRESSIONS, SEQUENCE_SCHEMA, SEQUENCES, read_manifest
from trainer.errors import ConfigError, DataError

if TYPE_CHECKING:
    from trainer.data.impression_loader import ImpressionLoader

SPLITS = ("train", "valid", "test")
WINDOWS = ("last", "random")
KEYS = ["history", "target", "negatives"]


@dataclasses.dataclass(kw_only=True)
class LoaderConfig:
    """Loader settings (checked at construction; errors name the key).

    Args:
        batch_size: users (sequences) per batch.
        max_len: history keeps the last ``max_len`` items.
        kind: ``"causal"`` (train only) | ``"last"`` | ``"ranker"``; see the module docstring.
        split: ``"train"`` | ``"valid"`` | ``"test"``.
        shuffle: shuffle row-group order, users within a row group and batch order, per epoch.
        seed: base of every random stream (with epoch, rank, worker, batch index).
        bucket_batches: batches' worth of examples sorted by length together; 1 disables bucketing.
        negatives: ``"none"`` | ``"uniform"`` | ``"popularity"`` | ``"in_batch"``.
        num_negatives: sampled negatives per example (uniform / popularity, kinds causal and last).
        popularity_alpha: popularity negatives are drawn with probability ``∝ popularity ** alpha``.
        ranker_negatives: negative candidates per positive for ``kind="ranker"`` (uniform / popularity).
        window: ``"last"`` | ``"random"``: which ``max_len + 1`` train items a long causal example takes.
        num_workers: DataLoader worker processes; the dataset plans its shards for exactly this many.
        even_batches: every rank yields the same number of batches (needed for distributed training).
        timestamps: fill ``Batch.timestamps`` from the ``timestamps`` column, aligned with the history.
        augment: sequence augmentations of causal examples (`trainer.data.augment`); none by default.
        heads: ``kind="impressions"``: the label columns of ``impressions.parquet`` that become
            ``Batch.labels`` columns, in this order (empty: all of them).
    """

    batch_size: int = 256
    max_len: int = 50
    kind: str = "causal"
    split: str = "train"
    shuffle: bool = True
    seed: int = 0
    bucket_batches: int = 16
    negatives: str = "none"
    num_negatives: int = 128
    popularity_alpha: float = 1.0
    ranker_negatives: int = 1
    window: str = "last"
    num_workers: int = 0
    even_batches: bool = True
    timestamps: bool = False
    augment: Augmentation = dataclasses.field(default_factory=Augmentation)
    heads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("batch_size", "max_len", "bucket_batches", "num_negatives", "ranker_negatives"):
            if getattr(self, key) < 1:
                raise ConfigError(f"loader.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("seed", "num_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loader.{key} must be >= 0, got {getattr(self, key)}")
        for key, allowed in (("kind", KINDS), ("split", SPLITS), ("negatives", sampling.NEGATIVES),
                             ("window", WINDOWS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"loader.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.kind == "causal" and self.split != "train":
            raise ConfigError(f"loader.kind='causal' needs split='train' (got {self.split!r}); use kind='last'")
        if self.augment.ops and self.kind != "causal":
            raise ConfigError(f"data.augment applies to causal training examples only (loader kind {self.kind!r})")
        if self.kind == "ranker" and self.negatives not in ("uniform", "popularity"):
            raise ConfigError("loader.kind='ranker' samples its negative candidates: set loader.negatives to "
                              f"'uniform' or 'popularity' (got {self.negatives!r})")


# ---------------------------------------------------------------------------------------------- jagged blocks


def _gather(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``values[s:s+n]`` for every (s, n) in one vectorised gather; returns (values, offsets)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(starts.astype(np.int64) - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return values[index], offsets


def _concat_jagged(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (values, offsets) pairs into one, shifting each part's offsets."""
    shifts = np.cumsum([0] + [len(values) for values, _ in parts])
    offsets = [off[:-1] + shift for (_, off), shift in zip(parts, shifts)] + [shifts[-1:]]
    return np.concatenate([values for values, _ in parts]), np.concatenate(offsets).astype(np.int64)


@dataclasses.dataclass
class _Block:
    """A run of examples as flat arrays: history (+ per-position arrays aligned with it, e.g. actions and
    timestamps) and targets, each with (n + 1,) offsets."""

    user: np.ndarray
    hist: np.ndarray
    hist_off: np.ndarray
    tgt: np.ndarray
    tgt_off: np.ndarray
    aligned: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user)

    @property
    def hist_len(self) -> np.ndarray:
        return np.diff(self.hist_off)

    def take(self, index: np.ndarray) -> _Block:
        starts, lengths = self.hist_off[index], self.hist_len[index]
        hist, hist_off = _gather(self.hist, starts, lengths)
        aligned = {name: _gather(values, starts, lengths)[0] for name, values in self.aligned.items()}
        tgt, tgt_off = _gather(self.tgt, self.tgt_off[index], np.diff(self.tgt_off)[index])
        return _Block(self.user[index], hist, hist_off, tgt, tgt_off, aligned)

    def slice(self, lo: int, hi: int) -> _Block:
        h0, h1, t0, t1 = self.hist_off[lo], self.hist_off[hi], self.tgt_off[lo], self.tgt_off[hi]
        aligned = {name: values[h0:h1] for name, values in self.aligned.items()}
        return _Block(self.user[lo:hi], self.hist[h0:h1], self.hist_off[lo:hi + 1] - h0,
                      self.tgt[t0:t1], self.tgt_off[lo:hi + 1] - t0, aligned)

    @staticmethod
    def concat(blocks: list[_Block]) -> _Block:
        if len(blocks) == 1:
            return blocks[0]
        hist, hist_off = _concat_jagged([(b.hist, b.hist_off) for b in blocks])
        tgt, tgt_off = _concat_jagged([(b.tgt, b.tgt_off) for b in blocks])
        aligned = {name: np.concatenate([b.aligned[name] for b in blocks]) for name in blocks[0].aligned}
        return _Block(np.concatenate([b.user for b in blocks]), hist, hist_off, tgt, tgt_off, aligned)


class _Rebuffer:
    """Turns a stream of row-group blocks into blocks of exactly the requested sizes."""

    def __init__(self, blocks: Iterator[_Block], path: Path) -> None:
        self._blocks, self._path = blocks, path
        self._pending: list[_Block] = []
        self._have = 0

    def take(self, n: int) -> _Block:
        while self._have < n:
            block = next(self._blocks, None)
            if block is None:
                raise DataError("fewer examples than planned from its metadata (was the file replaced?)",
                                file=self._path)
            self._pending.append(block)
            self._have += len(block)
        whole = _Block.concat(self._pending)
        rest = whole.slice(n, len(whole))
        self._pending, self._have = ([rest] if len(rest) else []), len(rest)
        return whole.slice(0, n)


# -------------------------------------------------------------------------------------------- example layout


def _positions(train_end: np.ndarray, valid_end: np.ndarray, n: np.ndarray | None, config: LoaderConfig
               ) -> tuple[np.ndarray, ...]:
    """Per user: (has_example, hist_lo, hist_hi, tgt_lo, tgt_hi) as positions in ``items`` (module docstring)."""
    te, ve = train_end.astype(np.int64), valid_end.astype(np.int64)
    if config.kind == "causal":
        lo = np.maximum(te - (config.max_len + 1), 0)
        return te >= 2, lo, te - 1, lo + 1, te
    if config.split == "train":
        cut, tgt_hi, has = te - 1, te, te >= 2
    elif config.split == "valid":
        cut, tgt_hi, has = te, ve, (te >= 1) & (ve > te)
    else:
        cut, tgt_hi = ve, n.astype(np.int64)
        has = (ve >= 1) & (tgt_hi > ve)
    return has, np.maximum(cut - config.max_len, 0), cut, cut, tgt_hi


def _random_window(train_end: np.ndarray, max_len: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Causal positions (hist_lo, hist_hi, tgt_lo, tgt_hi) of ``max_len + 1`` consecutive train items starting at a
    uniform position in ``0 .. train_end - (max_len + 1)``; shorter users keep their whole train sequence."""
    te = train_end.astype(np.int64)
    lo = rng.integers(0, np.maximum(te - (max_len + 1), 0) + 1)
    hi = np.minimum(lo + max_len + 1, te)
    return lo, hi - 1, lo + 1, hi


def _check_split_columns(train_end: np.ndarray, valid_end: np.ndarray, n: np.ndarray | None, path: Path,
                         first_row: int = 0) -> None:
    """``0 <= train_end <= valid_end (<= len(items))``, else a DataError naming the first bad row."""
    bad = (train_end < 0) | (valid_end < train_end)
    if n is not None:
        bad |= valid_end > n
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"split positions out of order: train_end={train_end[row]}, valid_end={valid_end[row]}"
                        + ("" if n is None else f", len(items)={n[row]}") + " (need 0 <= train_end <= "
                        "valid_end <= len(items))", file=path, row=first_row + row + 1, field="train_end/valid_end")


def _list_parts(column: pa.ChunkedArray, path: Path, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64, values) of a list column; nulls are a DataError."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if array.null_count or array.values.null_count:
        raise DataError("null lists or null values are not allowed", file=path, field=field)
    return array.offsets.to_numpy().astype(np.int64), array.values.to_numpy()


def _example_counts(path: Path, config: LoaderConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """(examples, rows) per row group and the split's total targets, from metadata plus the two split columns
    (and list lengths for test)."""
    file = pq.ParquetFile(path)
    missing = [name for name in SEQUENCE_SCHEMA.names if name not in file.schema_arrow.names]
    if missing:
        raise DataError(f"missing columns {missing} (expected {SEQUENCE_SCHEMA.names})", file=path)
    rows = np.array([file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)], dtype=np.int64)
    columns = ["train_end", "valid_end"] + (["items"] if config.split == "test" else [])
    table = file.read(columns=columns)
    te, ve = (table.column(name).to_numpy() for name in ("train_end", "valid_end"))
    n = np.diff(_list_parts(table.column("items"), path, "items")[0]) if config.split == "test" else None
    _check_split_columns(te, ve, n, path)
    has, _, _, tgt_lo, tgt_hi = _positions(te, ve, n, config)
    targets = int(((tgt_hi - tgt_lo) * has).sum())
    cum = np.concatenate([[0], np.cumsum(has, dtype=np.int64)])
    bounds = np.concatenate([[0], np.cumsum(rows)])
    return cum[bounds[1:]] - cum[bounds[:-1]], rows, targets


# ----------------------------------------------------------------------------------------------------- planning


@dataclasses.dataclass(frozen=True)
class _Shard:
    """What one (rank, worker) reads and yields."""

    row_groups: np.ndarray
    counts: np.ndarray
    num_batches: int

    @property
    def num_examples(self) -> int:
        return int(self.counts.sum())


def _balance(weights: np.ndarray, parts: int) -> list[np.ndarray]:
    """Largest first, each to the lightest part (ties: lowest index); deterministic, members kept sorted."""
    loads = np.zeros(parts, dtype=np.int64)
    members: list[list[int]] = [[] for _ in range(parts)]
    for i in np.argsort(-weights, kind="stable"):
        part = int(np.argmin(loads))
        members[part].append(int(i))
        loads[part] += weights[i]
    return [np.array(sorted(m), dtype=np.int64) for m in members]


def _spread(examples: np.ndarray, batches: np.ndarray, total: int, rank: int) -> np.ndarray:
    """Add batches to workers until they sum to ``total``, each extra to the worker with the largest batches."""
    batches = batches.copy()
    extra = total - int(batches.sum())
    if extra > int((examples - batches).sum()):
        raise ConfigError(
            f"even_batches: rank {rank} has only {int(examples.sum())} examples but every rank must yield {total} "
            "batches; use fewer ranks or loader workers, or a smaller batch_size")
    for _ in range(extra):
        mean = np.where(batches < examples, examples / np.maximum(batches, 1), -1.0)
        batches[int(np.argmax(mean))] += 1
    return batches


def _plan(counts: np.ndarray, world_size: int, config: LoaderConfig) -> list[list[_Shard]]:
    """Shards ``[rank][worker]``: row groups and batch counts; identical on every rank and worker."""
    workers = max(config.num_workers, 1)
    groups = [[rgs[w] for w in _balance(counts[rgs], workers)] for rgs in _balance(counts, world_size)]
    examples = np.array([[counts[rgs].sum() for rgs in rank] for rank in groups], dtype=np.int64)
    natural = -(-examples // config.batch_size)
    if config.even_batches:
        total = int(natural.sum(axis=1).max())
        natural = np.stack([_spread(examples[r], natural[r], total, r) for r in range(world_size)])
    return [[_Shard(rgs, counts[rgs], int(natural[r, w])) for w, rgs in enumerate(rank)]
            for r, rank in enumerate(groups)]


def _batch_sizes(examples: int, batches: int) -> np.ndarray:
    """Split ``examples`` into ``batches`` sizes differing by at most one."""
    if batches == 0:
        return np.zeros(0, dtype=np.int64)
    return examples // batches + (np.arange(batches) < examples % batches).astype(np.int64)


def _identity(batch: Batch) -> Batch:
    return batch


# ------------------------------------------------------------------------------------------------------ dataset


class SequenceDataset(IterableDataset):
    """Yields `Batch` es of one rank's share of a dataset folder (module docstring for the full contract).

    Args:
        folder: a dataset folder (`trainer.data.schema`).
        config: `LoaderConfig`; ``config.num_workers`` must match the DataLoader's (use `build_loader`).
        rank, world_size: this process's place among the data-parallel ranks.

    Example::

        dataset = SequenceDataset("data/ml-1m", LoaderConfig(batch_size=128), rank=0, world_size=1)
        dataset.set_epoch(0)
        batch = next(iter(dataset))   # Batch with sparse keys history / target / negatives
    """

    def __init__(self, folder: str | Path, config: LoaderConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.folder, self.config, self.rank, self.world_size = Path(folder), config, rank, world_size
        manifest = read_manifest(folder)
        self.path = self.folder / SEQUENCES
        if not self.path.is_file():
            raise DataError("missing sequences.parquet", file=self.path)
        counts, rows, targets = _example_counts(self.path, config)
        if counts.sum() == 0:
            raise DataError(f"no user has a {config.split!r} example for kind={config.kind!r}", file=self.path)
        self._first_row = np.concatenate([[0], np.cumsum(rows)])
        plan = _plan(counts, world_size, config)
        self._shards = plan[rank]
        # the same on every rank: targets of the whole split over all ranks' batches (a random window has the
        # same number of targets as the last one)
        self.mean_targets_per_batch = targets / sum(shard.num_batches for shards in plan for shard in shards)
        self.num_examples = sum(shard.num_examples for shard in self._shards)
        self.num_skipped = int(sum(rows[s.row_groups].sum() for s in self._shards)) - self.num_examples
        self.has_actions = ACTIONS_FIELD.name in pq.read_schema(self.path).names
        self._aligned_columns = ["actions"] * self.has_actions + ["timestamps"] * config.timestamps
        self.sampler = sampling.build_sampler(config.negatives, folder, manifest.num_items, config.popularity_alpha)
        self.num_items = manifest.num_items
        self.epoch = 0
        self._iter_epoch: int | None = None
        self._yielded = 0
        self._pending: tuple[int, int] | None = None
        self._pending_skips: tuple[int, list[int]] | None = None

    # -- protocol ---------------------------------------------------------------------------------------------

    def num_batches(self) -> int:
        """Batches this rank yields per epoch (the same on every rank when ``even_batches``)."""
        return sum(shard.num_batches for shard in self._shards)

    def __len__(self) -> int:
        return self.num_batches()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle the next iteration uses."""
        self.epoch = int(epoch)

    def _plan_key(self) -> list[int]:
        return [self.world_size, self.rank, self.config.num_workers, self.config.batch_size, self.num_batches()]

    def state_dict(self) -> dict[str, Any]:
        """Position of the current iteration: its epoch and how many batches it has yielded."""
        epoch = self.epoch if self._iter_epoch is None else self._iter_epoch
        return {"epoch": epoch, "yielded": self._yielded, "plan": self._plan_key()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration resume at ``state`` (later iterations follow `set_epoch` again)."""
        if list(state.get("plan", [])) != self._plan_key():
            raise ConfigError(f"loader state was saved with [world_size, rank, num_workers, batch_size, batches] = "
                              f"{state.get('plan')}, this loader has {self._plan_key()}; resume with the same setup")
        self._pending = (int(state["epoch"]), int(state["yielded"]))

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next iteration of ``epoch`` start after its first ``batches_done`` batches (loader-wide).

        The trainer counts batches it has *trained on*, which can lag what the loader has produced (TorchRec's
        pipeline prefetches), so resuming goes by that count rather than by the loader's own state. With workers,
        the DataLoader hands out batches round-robin over the workers that still have some; the same walk tells
        each worker how many of its own batches to skip.
        """
        counts = [shard.num_batches for shard in self._shards]
        skips = [0] * len(counts)
        remaining = min(int(batches_done), sum(counts))
        while remaining:
            for worker, count in enumerate(counts):
                if remaining and skips[worker] < count:
                    skips[worker] += 1
                    remaining -= 1
        self._pending_skips = (int(epoch), skips)

    def __iter__(self) -> Iterator[Batch | _Arrays]:
        """Batches of the next epoch (in a DataLoader worker: their arrays, which `SequenceLoader` converts)."""
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if workers != max(self.config.num_workers, 1):
            raise ConfigError(f"the dataset was planned for loader.num_workers={self.config.num_workers} but runs "
                              f"in a DataLoader with {workers if info else 0} workers; build it with build_loader")
        epoch, skip = self._pending if self._pending is not None else (self.epoch, 0)
        if self._pending_skips is not None:
            epoch, skip = self._pending_skips[0], self._pending_skips[1][worker]
        self._pending = self._pending_skips = None
        if not 0 <= skip <= self._shards[worker].num_batches:
            raise ConfigError(f"loader state says {skip} batches were yielded but worker {worker} of rank "
                              f"{self.rank} has {self._shards[worker].num_batches}; resume with the same setup")
        self._iter_epoch, self._yielded = epoch, skip
        return self._counted(self._batches(self._shards[worker], worker, epoch, skip), info is not None)

    def _counted(self, batches: Iterator[_Arrays], in_worker: bool) -> Iterator[Batch | _Arrays]:
        for batch in batches:
            self._yielded += 1  # before yielding: the loader reads state_dict right after receiving the batch
            yield batch if in_worker else batch.to_batch()

    # -- batches ----------------------------------------------------------------------------------------------

    def _batches(self, shard: _Shard, worker: int, epoch: int, skip: int) -> Iterator[_Arrays]:
        """The shard's batches for ``epoch``, starting after the first ``skip``."""
        sizes = _batch_sizes(shard.num_examples, shard.num_batches)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        per_buffer = self.config.bucket_batches
        first = skip // per_buffer
        stream = _Rebuffer(self._blocks(shard, worker, epoch, int(bounds[first * per_buffer])), self.path)
        for buffer in range(first, -(-shard.num_batches // per_buffer)):
            lo, hi = buffer * per_buffer, min((buffer + 1) * per_buffer, shard.num_batches)
            block = stream.take(int(bounds[hi] - bounds[lo]))
            order = np.argsort(block.hist_len, kind="stable") if per_buffer > 1 else np.arange(len(block))
            cuts = bounds[lo:hi + 1] - bounds[lo]
            batch_order = np.arange(hi - lo)
            if self.config.shuffle:
                rng = sampling.batch_rng(self.config.seed, epoch, self.rank, worker,
                                         sampling.STREAM_BATCH_ORDER, buffer)
                batch_order = rng.permutation(hi - lo)
            for j in range(max(skip - lo, 0), hi - lo):
                i = batch_order[j]
                yield self._to_batch(block.take(order[cuts[i]:cuts[i + 1]]), worker, epoch, lo + j)

    def _blocks(self, shard: _Shard, worker: int, epoch: int, start: int) -> Iterator[_Block]:
        """Examples of the shard's row groups in epoch order, from example number ``start`` on."""
        order = np.arange(len(shard.row_groups))
        if self.config.shuffle:
            order = sampling.batch_rng(self.config.seed, epoch, self.rank, worker,
                                       sampling.STREAM_ROW_GROUP_ORDER, 0).permutation(order)
        cum = np.concatenate([[0], np.cumsum(shard.counts[order])])
        first = int(np.searchsorted(cum, start, side="right")) - 1
        file = pq.ParquetFile(self.path)
        for pos in range(max(first, 0), len(order)):
            row_group, count = int(shard.row_groups[order[pos]]), int(shard.counts[order[pos]])
            if count:
                offset = start - int(cum[pos]) if pos == first else 0
                yield self._read(file, row_group, count, epoch, worker, offset)

    def _read(self, file: pq.ParquetFile, row_group: int, count: int, epoch: int, worker: int, offset: int
              ) -> _Block:
        """One row group's examples (shuffled when configured), without the first ``offset``."""
        columns = ["user_idx", "items", "train_end", "valid_end"] + self._aligned_columns
        table = file.read_row_group(row_group, columns=columns, use_threads=False)
        item_off, items = _list_parts(table.column("items"), self.path, "items")
        te, ve = table.column("train_end").to_numpy(), table.column("valid_end").to_numpy()
        lengths = np.diff(item_off)
        _check_split_columns(te, ve, lengths, self.path, int(self._first_row[row_group]))
        has, hist_lo, hist_hi, tgt_lo, tgt_hi = _positions(te, ve, lengths, self.config)
        if self.config.kind == "causal" and self.config.window == "random":
            rng = sampling.batch_rng(self.config.seed, epoch, self.rank, worker, sampling.STREAM_WINDOW, row_group)
            hist_lo, hist_hi, tgt_lo, tgt_hi = _random_window(te, self.config.max_len, rng)
        rows = np.flatnonzero(has)
        if len(rows) != count:
            raise DataError(f"row group {row_group} has {len(rows)} examples, planned {count} (file replaced?)",
                            file=self.path)
        if self.config.shuffle:
            rows = rows[sampling.batch_rng(self.config.seed, epoch, self.rank, worker,
                                           sampling.STREAM_ROW_PERMUTATION, row_group).permutation(len(rows))]
        rows = rows[offset:]
        hist_start, hist_len = item_off[rows] + hist_lo[rows], hist_hi[rows] - hist_lo[rows]
        hist, hist_off = _gather(items, hist_start, hist_len)
        tgt, tgt_off = _gather(items, item_off[rows] + tgt_lo[rows], tgt_hi[rows] - tgt_lo[rows])
        first_row = int(self._first_row[row_group])
        aligned = {}  # the per-position columns, cut like the history
        for name in self._aligned_columns:
            starts, values = self._aligned(table, name, lengths, first_row)
            aligned[name] = _gather(values, starts[rows] + hist_lo[rows], hist_len)[0]
        user = table.column("user_idx").to_numpy().astype(np.int64)[rows]
        return _Block(user, hist, hist_off, tgt, tgt_off, aligned)

    def _aligned(self, table: pa.Table, name: str, lengths: np.ndarray, first_row: int
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(start offsets, values) of a list column that must hold one value per item of each row."""
        offsets, values = _list_parts(table.column(name), self.path, name)
        if not np.array_equal(np.diff(offsets), lengths):
            row = int(np.flatnonzero(np.diff(offsets) != lengths)[0]) + first_row
            raise DataError(f"{name} and items differ in length", file=self.path, row=row + 1, field=name)
        return offsets[:-1], values

    def _to_batch(self, block: _Block, worker: int, epoch: int, index: int) -> _Arrays:
        """Arrays of one batch; negatives depend only on (seed, epoch, rank, worker, index)."""
        rng = sampling.batch_rng(self.config.seed, epoch, self.rank, worker, sampling.STREAM_NEGATIVES, index)
        if self.config.kind == "ranker":
            return self._ranker_batch(block, rng)
        if self.config.augment.ops:
            augment_rng = sampling.batch_rng(self.config.seed, epoch, self.rank, worker, sampling.STREAM_AUGMENT, index)
            block = _Block(block.user, *augment_block(block.hist, block.hist_off, block.tgt, block.tgt_off, block.aligned,
                                                      self.config.augment, self.num_items, augment_rng))
        negatives, negative_logq, target_logq = np.empty(0, dtype=np.int64), _no_floats(), _no_floats()
        if self.sampler is not None:
            negatives, negative_logq = self.sampler.sample(len(block) * self.config.num_negatives, rng)
            target_logq = self.sampler.logq(block.tgt)
        per_example = len(negatives) // len(block)
        return _Arrays(
            kind=self.config.kind,
            values=[block.hist, block.tgt, negatives],
            lengths=[block.hist_len, np.diff(block.tgt_off), np.full(len(block), per_example)],
            user_idx=block.user,
            target_logq=target_logq,
            negative_logq=negative_logq,
            actions=block.aligned.get("actions"),
            timestamps=block.aligned.get("timestamps"),
        )

    def _ranker_batch(self, block: _Block, rng: np.random.Generator) -> _Arrays:
        """Rows ``[positive, negative_1..k]`` per user, each with the user's history; labels 1, 0..0."""
        k, users = self.config.ranker_negatives, len(block)
        negatives, _ = self.sampler.sample(users * k, rng)
        candidates = np.concatenate([block.tgt[block.tgt_off[:-1], None].astype(np.int64),
                                     negatives.reshape(users, k)], axis=1).ravel()
        labels = np.zeros((users, 1 + k), dtype=np.float32)
        labels[:, 0] = 1.0
        rows = block.take(np.repeat(np.arange(users), 1 + k))
        return _Arrays(
            kind="ranker",
            values=[rows.hist, candidates, negatives[:0]],
            lengths=[rows.hist_len, np.ones(len(rows), dtype=np.int64), np.zeros(len(rows), dtype=np.int64)],
            user_idx=rows.user,
            labels=labels.reshape(-1, 1),
            target_logq=self.sampler.logq(candidates),
            actions=rows.aligned.get("actions"),
            timestamps=rows.aligned.get("timestamps"),
        )


def _no_floats() -> np.ndarray:
    return np.empty(0, dtype=np.float32)


@dataclasses.dataclass
class _Arrays:
    """One batch as numpy arrays: what loader workers send to the training process.

    Pickled numpy arrays cross processes about 5x faster than tensors, which torch moves through one new
    shared-memory segment each. `to_batch` builds the `Batch` in the receiving process (or, with pinned memory,
    in the DataLoader's pinning thread via `pin_memory`).
    """

    kind: str
    values: list[np.ndarray]
    lengths: list[np.ndarray]
    user_idx: np.ndarray
    labels: np.ndarray = dataclasses.field(default_factory=_no_floats)  # (B, H) for ranker batches
    target_logq: np.ndarray = dataclasses.field(default_factory=_no_floats)
    negative_logq: np.ndarray = dataclasses.field(default_factory=_no_floats)
    actions: np.ndarray | None = None
    timestamps: np.ndarray | None = None

    def to_batch(self) -> Batch:
        sparse = KeyedJaggedTensor(
            keys=KEYS,
            values=torch.from_numpy(np.concatenate(self.values).astype(np.int64, copy=False)),
            lengths=torch.from_numpy(np.concatenate(self.lengths).astype(np.int64, copy=False)),
        )
        actions, timestamps = (np.empty(0, dtype=np.int64) if a is None else a.astype(np.int64)
                               for a in (self.actions, self.timestamps))
        return Batch(
            sparse=sparse,
            user_idx=torch.from_numpy(self.user_idx),
            kind=self.kind,
            labels=torch.from_numpy(self.labels),
            target_logq=torch.from_numpy(self.target_logq),
            negative_logq=torch.from_numpy(self.negative_logq),
            actions=torch.from_numpy(actions),
            timestamps=torch.from_numpy(timestamps),
        )

    def pin_memory(self) -> Batch:
        return self.to_batch().pin_memory()


def _as_batch(item: Batch | _Arrays) -> Batch:
    return item if isinstance(item, Batch) else item.to_batch()


class SequenceLoader(StatefulDataLoader):
    """`StatefulDataLoader` that yields `Batch` es: worker output arrives as `_Arrays` and is converted here."""

    def __iter__(self) -> Iterator[Batch]:
        return map(_as_batch, super().__iter__())


def build_loader(folder: str | Path, config: LoaderConfig, rank: int = 0, world_size: int = 1
                 ) -> SequenceLoader | ImpressionLoader:
    """A resumable DataLoader over `SequenceDataset` (the dataset batches; pinned memory only with CUDA).

    ``kind="impressions"`` reads ``impressions.parquet`` (`trainer.data.impression_loader`) where the dataset
    has one, else falls back to ``ranker`` rows (positives with sampled negatives).
    """
    if config.kind == "impressions":
        from trainer.data.impression_loader import build_impression_loader, fallback_config

        if (Path(folder) / IMPRESSIONS).is_file():
            return build_impression_loader(folder, config, rank, world_size)
        config = fallback_config(config)
    dataset = SequenceDataset(folder, config, rank, world_size)
    extra = {"prefetch_factor": 4} if config.num_workers > 0 else {}
    # Every iterator draws its workers' base seed from this generator; left to the default one it would consume a
    # number from torch's global stream (dropout masks) at each epoch start, so a run resumed mid-epoch would draw
    # different masks from the uninterrupted run. Batches never depend on it (they are functions of the seed).
    generator = torch.Generator().manual_seed(config.seed)
    return SequenceLoader(
        dataset,
        batch_size=None,
        collate_fn=_identity,
        num_workers=config.num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
        **extra,
    )
