"""Turn a raw interaction log into a dataset folder (manifest.json, items/users/sequences.parquet).

Steps, in this order, streaming in bounded memory:
  1. read the log in chunks with the reader for --format; drop events rated below --min-rating; encode users,
     items and actions as integer codes in order of first appearance; past --spill-threshold events, spill the
     codes to temporary Parquet partitions (hash of the user) inside the output's temporary folder;
  2. per partition: sort each user's events by (timestamp, input order) and apply --dedupe;
  3. --kcore: drop items, then users, with fewer than K events (repeated to a fixed point unless
     --kcore-single-pass);
  4. users too short for the split: an error naming the first one, or dropped with --short-users drop;
  5. split positions (leave-one-out or a global time cut), train popularity, side features; write everything
     and rename the folder into place. A failed run leaves nothing behind.

Example:
  seqrec prepare --format sasrec ../shared/data/sasrec-ml-1m/ml-1m.txt data/ml1m
  seqrec prepare --format movielens ../shared/data/movielens-100k data/ml-100k --kcore 5 --split time \\
      --valid-frac 0.1 --test-frac 0.1 --short-users drop
  seqrec synth --output data/day2 --users 3000 --seed 2 && seqrec synth --output data/day1 --users 2000 --seed 1
  seqrec prepare --format synthetic data/day1 data/shop
  seqrec prepare --format synthetic --append-to data/shop data/day2 data/shop-v2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from trainer.data import schema
from trainer.data.features import write_side_table
from trainer.data.impressions import write_impressions
from trainer.data.partitions import Columns, Cursor, DiskStore, MemoryStore, prefetch
from trainer.data.readers import FORMATS, open_reader
from trainer.data.readers.base import REQUIRED_EVENT_COLUMNS, RawLog, sha256_file
from trainer.data.schema import Manifest, atomic_output_dir
from trainer.data.vocab import Vocabulary
from trainer.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DEDUPE_POLICIES = ("none", "exact", "first")
SPLITS = ("leave_one_out", "time")
SHORT_USER_POLICIES = ("error", "drop")
LOO_MIN_EVENTS = 3
SPILL_THRESHOLD = 1 << 24  # events kept in memory (~17 bytes each) before spilling to partitions
SPILL_PARTITIONS = 64
BLOCK_EVENTS = 1 << 23  # events gathered per write block of sequences.parquet


@dataclasses.dataclass(kw_only=True)
class PrepareConfig:
    """What `prepare` reads, how it filters and splits, and where it writes.

    Args:
        format: reader name (`trainer.data.readers.FORMATS`).
        input: raw log file or folder.
        output: dataset folder to create.
        overwrite: replace an existing ``output`` (only once the new one is complete).
        min_rating: drop events rated below this (and events without a rating); None keeps all.
        kcore: drop items and users with fewer than this many events; 0 turns it off.
        kcore_iterate: repeat the k-core filter until nothing changes (a true k-core); False = one pass,
            items first, then users.
        dedupe: "none"; "exact" drops events repeating an earlier (user, item, timestamp); "first" keeps only the
            first event of each (user, item) pair.
        split: "leave_one_out" (last event = test, second-to-last = validation) or "time" (global cuts).
        valid_cut / test_cut: time split cut timestamps: ``ts < valid_cut`` train, ``ts < test_cut`` validation,
            else test. Give either both cuts or both fractions.
        valid_frac / test_frac: the cuts as fractions of the time range of the events read (after min_rating):
            ``test_cut = t_max - test_frac * (t_max - t_min)``, ``valid_cut = test_cut - valid_frac * (...)``.
        short_users: users with fewer events than the split needs (leave-one-out: 3; time: 1 before
            ``valid_cut``): "error" or "drop".
        buckets: number of quantile buckets for numeric side features (price, age, ...).
        reader_options: keyword options for the reader (e.g. ``{"columns": {"user": "uid"}}``).
        spill_threshold: events held in memory; beyond it the log is spilled to ``partitions`` Parquet partitions.
        partitions: number of user-hash partitions when spilling; each must fit in memory.
    """

    format: str
    input: Path
    output: Path
    overwrite: bool = False
    min_rating: float | None = None
    kcore: int = 0
    kcore_iterate: bool = True
    dedupe: str = "none"
    split: str = "leave_one_out"
    valid_cut: int | None = None
    test_cut: int | None = None
    valid_frac: float | None = None
    test_frac: float | None = None
    short_users: str = "error"
    buckets: int = 10
    reader_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    spill_threshold: int = SPILL_THRESHOLD
    partitions: int = SPILL_PARTITIONS

    def __post_init__(self) -> None:
        self.input, self.output = Path(self.input), Path(self.output)

    def validate(self) -> None:
        """Cross-field checks, each naming the setting to change."""
        for name, allowed in (("dedupe", DEDUPE_POLICIES), ("split", SPLITS), ("short_users", SHORT_USER_POLICIES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}; choose one of: {', '.join(allowed)}")
        for name, low in (("kcore", 0), ("buckets", 1), ("spill_threshold", 1), ("partitions", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        cuts = (self.valid_cut, self.test_cut)
        fracs = (self.valid_frac, self.test_frac)
        if self.split == "leave_one_out":
            if any(v is not None for v in cuts + fracs):
                raise ConfigError("valid_cut/test_cut/valid_frac/test_frac apply only to split='time'")
            return
        if any(v is not None for v in cuts) == any(v is not None for v in fracs):
            raise ConfigError("split='time' needs either valid_cut and test_cut, or valid_frac and test_frac")
        if any(v is not None for v in cuts):
            if None in cuts:
                raise ConfigError("split='time' needs both valid_cut and test_cut")
            if self.valid_cut > self.test_cut:
                raise ConfigError(f"valid_cut ({self.valid_cut}) must be <= test_cut ({self.test_cut})")
        else:
            if None in fracs:
                raise ConfigError("split='time' needs both valid_frac and test_frac")
            if self.valid_frac < 0 or self.test_frac <= 0 or self.valid_frac + self.test_frac >= 1:
                raise ConfigError("need valid_frac >= 0, test_frac > 0 and valid_frac + test_frac < 1")


@dataclasses.dataclass
class _Counts:
    """What each stage saw and removed (for the manifest)."""

    events_read: int = 0
    removed_min_rating: int = 0
    duplicates_found: int = 0
    removed_dedupe: int = 0
    kcore_iterations: int = 0
    removed_kcore_events: int = 0
    removed_kcore_users: int = 0
    removed_kcore_items: int = 0
    removed_short_users: int = 0
    removed_short_user_events: int = 0
    t_min: int | None = None
    t_max: int | None = None


# ------------------------------------------------------------------------------------------------ reading


class _Encoder:
    """Turns reader chunks into compact integer columns, applying min_rating on the way."""

    def __init__(self, config: PrepareConfig, raw: RawLog, counts: _Counts) -> None:
        self.config, self.counts = config, counts
        self.source = raw.files[0] if len(raw.files) == 1 else config.input
        self.users, self.items, self.actions = Vocabulary(), Vocabulary(), Vocabulary()
        self.has_actions: bool | None = None

    def encode(self, batch: pa.RecordBatch) -> Columns:
        first_row = self.counts.events_read + 1
        self.counts.events_read += batch.num_rows
        names = batch.schema.names
        for name in REQUIRED_EVENT_COLUMNS:
            if name not in names:
                raise DataError("event chunk has no such column", file=self.source, field=name)
        for name in (*REQUIRED_EVENT_COLUMNS, "action"):
            if name in names:
                self._check_nulls(batch.column(name), name, first_row)
        batch = self._filter_rating(batch)
        has_actions = "action" in names
        if self.has_actions is None:
            self.has_actions = has_actions
        elif has_actions != self.has_actions:
            raise DataError("some event chunks have an action column and others do not", file=self.source,
                            field="action")
        cols = {
            "user": self.users.encode(batch.column("user")).astype(np.int32),
            "item": self.items.encode(batch.column("item")).astype(np.int32),
            "ts": batch.column("timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False),
        }
        if has_actions:
            cols["action"] = self.actions.encode(batch.column("action"))
            if len(self.actions) > 127:
                raise DataError("more than 127 distinct actions", file=self.source, field="action")
            cols["action"] = cols["action"].astype(np.int8)
        if len(cols["ts"]):
            lo, hi = int(cols["ts"].min()), int(cols["ts"].max())
            self.counts.t_min = lo if self.counts.t_min is None else min(lo, self.counts.t_min)
            self.counts.t_max = hi if self.counts.t_max is None else max(hi, self.counts.t_max)
        return cols

    def _check_nulls(self, column: pa.Array, name: str, first_row: int) -> None:
        if column.null_count:
            row = first_row + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError("missing value", file=self.source, row=row, field=name)

    def _filter_rating(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.config.min_rating is None:
            return batch
        if "rating" not in batch.schema.names:
            raise ConfigError(f"min_rating needs ratings, but format {self.config.format!r} gives none; "
                              "drop --min-rating")
        keep = pc.fill_null(pc.greater_equal(batch.column("rating"), self.config.min_rating), False)
        kept = batch.filter(keep)
        self.counts.removed_min_rating += batch.num_rows - kept.num_rows
        return kept


def _read(raw: RawLog, config: PrepareConfig, spill_dir: Path, counts: _Counts) -> tuple[Any, _Encoder]:
    """Stream the log into a store: in memory, or hash-partitioned on disk once it passes the threshold."""
    encoder = _Encoder(config, raw, counts)
    store: Any = MemoryStore()
    with tqdm(desc="read", unit="ev", unit_scale=True, disable=None) as bar:
        for batch in prefetch(raw.events()):
            cols = encoder.encode(batch)
            bar.update(batch.num_rows)
            store.append(cols)
            if isinstance(store, MemoryStore) and store.size > config.spill_threshold:
                disk = DiskStore(spill_dir, config.partitions, bool(encoder.has_actions))
                for chunk in store.chunks():
                    disk.append(chunk)
                store = disk
    if isinstance(store, DiskStore):
        store.finish_appends()
    log.info("read %d events (%d users, %d items) into %d partition(s)", counts.events_read, len(encoder.users),
             len(encoder.items), store.partitions)
    return store, encoder


# ------------------------------------------------------------------------------------- sort and dedupe


def _sort_dedupe(cols: Columns, policy: str, num_items: int, counts: _Counts) -> Columns | None:
    """Stable sort by (user, timestamp) -- ties keep input order -- then drop duplicates per ``policy``.

    Returns None when the events were already in order and nothing was dropped (nothing to write back).
    """
    order = _stable_order(cols["user"], cols["ts"])
    if order is not None:
        cols = {k: v[order] for k, v in cols.items()}
    exact = _exact_duplicates(cols)
    counts.duplicates_found += int(exact.sum())
    drop = {"exact": exact, "first": _repeated_pairs(cols, num_items) if policy == "first" else None}.get(policy)
    if drop is not None and drop.any():
        counts.removed_dedupe += int(drop.sum())
        return {k: v[~drop] for k, v in cols.items()}
    return cols if order is not None else None


def _stable_order(user: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """Permutation sorting by (user, ts) stably; None if already sorted (grouped, time-ordered inputs)."""
    if len(user) < 2:
        return None
    t_min = int(ts.min())
    span = int(ts.max()) - t_min + 1
    if (int(user.max()) + 1) * span < (1 << 62):  # one int64 key: a single stable sort
        key = user.astype(np.int64) * span + (ts - t_min)
        if np.all(key[1:] >= key[:-1]):
            return None
        return np.argsort(key, kind="stable")
    return np.lexsort((ts, user))


def _exact_duplicates(cols: Columns) -> np.ndarray:
    """Mask of events repeating an earlier (user, item, timestamp); input sorted by (user, ts)."""
    user, ts, item = cols["user"], cols["ts"], cols["item"]
    n = len(user)
    dup = np.zeros(n, bool)
    if n < 2:
        return dup
    tie = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])
    if not tie.any():
        return dup
    group = np.concatenate(([0], np.cumsum(~tie)))  # run id of each (user, ts)
    tied = np.zeros(n, bool)
    tied[1:] |= tie
    tied[:-1] |= tie
    rows = np.flatnonzero(tied)
    order = np.lexsort((item[rows], group[rows]))  # stable: the earliest row of each repeat comes first
    g, it = group[rows][order], item[rows][order]
    repeat = np.concatenate(([False], (g[1:] == g[:-1]) & (it[1:] == it[:-1])))
    dup[rows[order[repeat]]] = True
    return dup


def _repeated_pairs(cols: Columns, num_items: int) -> np.ndarray:
    """Mask of events whose (user, item) pair occurred earlier in the user's time order."""
    pair = cols["user"].astype(np.int64) * max(num_items, 1) + cols["item"]
    order = np.argsort(pair, kind="stable")
    sorted_pair = pair[order]
    dup = np.zeros(len(pair), bool)
    dup[order[1:][sorted_pair[1:] == sorted_pair[:-1]]] = True
    return dup


# ----------------------------------------------------------------------------------------------- k-core


def _kcore(store: Any, k: int, iterate: bool, num_users: int, item_degree: np.ndarray,
           counts: _Counts) -> tuple[np.ndarray, np.ndarray]:
    """Alive masks of users and items: drop items with < k events, then users with < k, until stable.

    Users live in exactly one partition, so their degrees are local; item degrees are summed over partitions.
    """
    user_alive = np.ones(num_users, bool)
    item_alive = np.ones(len(item_degree), bool)
    with tqdm(desc="k-core", unit="iter", disable=None) as bar:
        while True:
            counts.kcore_iterations += 1
            item_alive &= item_degree >= k
            item_degree = np.zeros(len(item_degree), np.int64)
            users_dropped = 0
            for part in range(store.partitions):
                cols = store.get(part, ("user", "item"))
                user, item = cols["user"], cols["item"]
                keep = user_alive[user] & item_alive[item]
                degree = np.bincount(user[keep], minlength=num_users)
                dead = (degree > 0) & (degree < k)
                user_alive[dead] = False
                users_dropped += int(dead.sum())
                keep &= user_alive[user]
                item_degree += np.bincount(item[keep], minlength=len(item_degree))
            bar.update()
            # No user dropped => item degrees only lost the dropped items' events: every alive item has >= k.
            if not iterate or users_dropped == 0:
                break
    return user_alive, item_alive & (item_degree > 0)


# ------------------------------------------------------------------------------------ split and finalise


@dataclasses.dataclass
class _Split:
    """Per-user results, indexed by user code, plus per-item train counts."""

    length: np.ndarray
    train_end: np.ndarray
    valid_end: np.ndarray
    popularity: np.ndarray
    present: np.ndarray


def _finalize(store: Any, config: PrepareConfig, cuts: tuple[int, int] | None, masks: tuple | None,
              num_users: int, num_items: int, encoder: _Encoder, counts: _Counts) -> _Split:
    """Apply the k-core masks and the short-user policy, compute split positions and train popularity."""
    out = _Split(np.zeros(num_users, np.int64), np.zeros(num_users, np.int64), np.zeros(num_users, np.int64),
                 np.zeros(num_items, np.int64), np.zeros(num_items, bool))
    short_first: tuple[int, int] | None = None  # (user code, events) of the first short user
    users_after_kcore = 0
    for part in tqdm(range(store.partitions), desc="split", unit="part", disable=None):
        cols = store.get(part)
        rows = len(cols["user"])
        if masks is not None:
            keep = masks[0][cols["user"]] & masks[1][cols["item"]]
            counts.removed_kcore_events += int(len(keep) - keep.sum())
            cols = {k: v[keep] for k, v in cols.items()}
        starts, codes, length = _runs(cols["user"])
        users_after_kcore += len(codes)
        train_end, valid_end = _positions(cols["ts"], starts, length, cuts)
        short = train_end < 1 if cuts is not None else length < LOO_MIN_EVENTS
        if short.any():
            first = int(np.flatnonzero(short)[0])
            if short_first is None or codes[first] < short_first[0]:
                short_first = (int(codes[first]), int(length[first]))
            if config.short_users == "drop":
                counts.removed_short_users += int(short.sum())
                counts.removed_short_user_events += int(length[short].sum())
                keep = np.repeat(~short, length)
                cols = {k: v[keep] for k, v in cols.items()}
                codes, length, train_end, valid_end = (a[~short] for a in (codes, length, train_end, valid_end))
        out.length[codes], out.train_end[codes], out.valid_end[codes] = length, train_end, valid_end
        position = np.arange(len(cols["user"])) - np.repeat(np.cumsum(length) - length, length)
        train = position < np.repeat(train_end, length)
        out.popularity += np.bincount(cols["item"][train], minlength=num_items)
        out.present |= np.bincount(cols["item"], minlength=num_items) > 0
        if len(cols["user"]) < rows:
            store.put(part, cols)
    if masks is not None:
        counts.removed_kcore_users = num_users - users_after_kcore
        counts.removed_kcore_items = num_items - int(masks[1].sum())
    if short_first is not None and config.short_users == "error":
        raise _short_user_error(encoder.users.raw_ids()[short_first[0]].as_py(), short_first[1], cuts)
    return out


def _short_user_error(raw_id: str, length: int, cuts: tuple[int, int] | None) -> DataError:
    if cuts is None:
        need = f"has {length} event(s) after filters; leave-one-out needs at least {LOO_MIN_EVENTS}"
    else:
        need = f"has {length} event(s), none before the validation cut {cuts[0]}; the time split needs one"
    return DataError(f"{need} (pass --short-users drop to drop such users)", user=raw_id)


def _runs(user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start index, user code and length of each user's run in user-sorted events."""
    if len(user) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    return starts, user[starts].astype(np.int64), np.diff(np.r_[starts, len(user)])


def _positions(ts: np.ndarray, starts: np.ndarray, length: np.ndarray,
               cuts: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """``train_end`` and ``valid_end`` of each user run (leave-one-out when ``cuts`` is None)."""
    if cuts is None:
        return length - 2, length - 1
    if len(starts) == 0:
        return length, length
    before_valid = np.add.reduceat((ts < cuts[0]).astype(np.int64), starts)
    before_test = np.add.reduceat((ts < cuts[1]).astype(np.int64), starts)
    return before_valid, before_test


def _time_cuts(config: PrepareConfig, counts: _Counts) -> tuple[int, int] | None:
    if config.split != "time":
        return None
    if config.valid_cut is not None:
        return int(config.valid_cut), int(config.test_cut)
    t_min, t_max = counts.t_min or 0, counts.t_max or 0
    test_cut = t_max - int(config.test_frac * (t_max - t_min))
    return test_cut - int(config.valid_frac * (t_max - t_min)), test_cut


# ------------------------------------------------------------------------------------------------ writing


def _write_sequences(path: Path, store: Any, split: _Split, users: np.ndarray, item_idx: np.ndarray,
                     has_actions: bool) -> None:
    """sequences.parquet in user-code order, `schema.row_group_users` per row group, list columns built jagged."""
    table_schema = schema.SEQUENCE_SCHEMA
    if has_actions:
        table_schema = table_schema.insert(3, schema.ACTIONS_FIELD)
    mean_length = max(1, int(split.length[users].mean())) if len(users) else 1
    group = schema.row_group_users(len(users))
    block = group * max(1, BLOCK_EVENTS // (group * mean_length))
    cursors = [Cursor(store.batches(p)) for p in range(store.partitions)]
    # No dictionary pages: item ids and timestamps are near-unique; zstd-1 halves the size at lz4-like speed.
    with pq.ParquetWriter(path, table_schema, use_dictionary=False, compression="zstd", compression_level=1) as \
            writer, tqdm(
        total=len(users), desc="write", unit="user", unit_scale=True, disable=None
    ) as bar:
        for start in range(0, len(users), block):
            codes = users[start : start + block]
            ends = np.cumsum(split.length[codes])
            pieces = [piece for cursor in cursors for piece in cursor.take_until(int(codes[-1]))]
            cols = _interleave(pieces, codes, ends, item_idx)
            offsets = pa.array(np.r_[0, ends].astype(np.int32))
            arrays = {
                "user_idx": pa.array(np.arange(start, start + len(codes), dtype=np.int32)),
                "items": pa.ListArray.from_arrays(offsets, pa.array(cols["item"])),
                "timestamps": pa.ListArray.from_arrays(offsets, pa.array(cols["ts"])),
                "train_end": pa.array(split.train_end[codes].astype(np.int32)),
                "valid_end": pa.array(split.valid_end[codes].astype(np.int32)),
            }
            if has_actions:
                arrays["actions"] = pa.ListArray.from_arrays(offsets, pa.array(cols["action"]))
            writer.write_table(pa.table(arrays, schema=table_schema), row_group_size=group)
            bar.update(len(codes))


def _interleave(pieces: list[Columns], codes: np.ndarray, ends: np.ndarray, item_idx: np.ndarray) -> Columns:
    """Scatter user-sorted pieces (one per partition) into one block in user-code order; items -> item_idx.

    Each user's events sit contiguously in exactly one piece, so a row's destination is its user's offset in the
    block plus its position within the user: no sort needed.
    """
    out = {k: np.empty(int(ends[-1]), v.dtype) for k, v in pieces[0].items() if k != "user"}
    out["item"] = np.empty(int(ends[-1]), np.int32)
    for piece in pieces:
        user = piece["user"]
        if len(user) == 0:
            continue
        starts, run_codes, run_length = _runs(user)
        run_rank = np.searchsorted(codes, run_codes)
        begin = ends[run_rank] - run_length  # where each run goes in the block
        dest = np.arange(len(user)) + np.repeat(begin - starts, run_length)
        out["item"][dest] = item_idx[piece["item"]]
        for key in out.keys() - {"item"}:
            out[key][dest] = piece[key]
    return out


# ------------------------------------------------------------------------------------------------ driver


def prepare(config: PrepareConfig, raw: RawLog | None = None) -> Manifest:
    """Build the dataset folder ``config.output`` and return its manifest.

    ``raw`` is an already opened log (custom readers, tests); by default ``config.input`` is opened with the
    reader for ``config.format``. Everything is written to a temporary sibling folder renamed at the end.
    """
    config.validate()
    for source in raw.files if raw is not None else [config.input]:
        _refuse_overlap(Path(source), config.output)
    try:
        return _prepare_into(config, raw)
    except OSError as exc:  # permission denied, disk full, read-only: one line, the temporary folder is gone
        reason = exc.strerror or str(exc).splitlines()[0]
        raise DataError(f"{reason}; nothing was written", file=exc.filename or config.output) from exc


def _refuse_overlap(source: Path, output: Path) -> None:
    """No command may replace its own input: the output must not be, be inside, or contain the input."""
    src, out = source.resolve(), output.resolve()
    if src == out or src in out.parents or out in src.parents:
        where = "is" if src == out else "is inside" if src in out.parents else "contains"
        raise DataError(f"the output folder {where} the input {source}; choose an output folder elsewhere "
                        "(nothing was changed)", file=output)


def _prepare_into(config: PrepareConfig, raw: RawLog | None) -> Manifest:
    with atomic_output_dir(config.output, overwrite=config.overwrite) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # a dataset folder is shared data, not private like a fresh temporary folder
        if raw is None:
            raw = open_reader(config.format, config.input, **config.reader_options)
        hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # checksums overlap with the work
        try:
            digests = [hasher.submit(sha256_file, path) for path in raw.files]
            manifest = _build(config, raw, tmp)
            manifest.source = _source(config, raw, [d.result() for d in digests])
        finally:
            hasher.shutdown(wait=False, cancel_futures=True)
        manifest.write(tmp)
    return manifest


def _build(config: PrepareConfig, raw: RawLog, tmp: Path) -> Manifest:
    counts = _Counts()
    spill = tmp / "_partitions"
    store, encoder = _read(raw, config, spill, counts)
    try:
        num_users, num_items = len(encoder.users), len(encoder.items)
        item_degree = np.zeros(num_items, np.int64)
        for part in tqdm(range(store.partitions), desc="sort", unit="part", disable=None):
            cols = store.get(part)
            done = _sort_dedupe(cols, config.dedupe, num_items, counts)
            if done is not None:
                store.put(part, done)
                cols = done
            item_degree += np.bincount(cols["item"], minlength=num_items)
        masks = None
        if config.kcore > 0:
            masks = _kcore(store, config.kcore, config.kcore_iterate, num_users, item_degree, counts)
        cuts = _time_cuts(config, counts)
        split = _finalize(store, config, cuts, masks, num_users, num_items, encoder, counts)
        users = np.flatnonzero(split.length > 0)
        if len(users) == 0:
            raise DataError(f"no events left after filters ({_removed_summary(counts)})", file=config.input)
        item_codes = np.flatnonzero(split.present)
        item_idx = np.zeros(num_items, np.int32)
        item_idx[item_codes] = np.arange(1, len(item_codes) + 1, dtype=np.int32)
        _write_sequences(tmp / schema.SEQUENCES, store, split, users, item_idx, bool(encoder.has_actions))
    finally:
        store.close()
        if spill.exists():
            for path in spill.iterdir():
                path.unlink()
            spill.rmdir()
    features = {
        "items": write_side_table(tmp / schema.ITEMS, "items", raw, encoder.items.raw_ids().take(item_codes),
                                  {"popularity": pa.array(split.popularity[item_codes])}, config.buckets),
        "users": write_side_table(tmp / schema.USERS, "users", raw, encoder.users.raw_ids().take(users), {},
                                  config.buckets),
    }
    lengths, train_end, valid_end = split.length[users], split.train_end[users], split.valid_end[users]
    manifest_counts = {
        "users": len(users), "items": len(item_codes), "interactions": int(lengths.sum()),
        "train_interactions": int(train_end.sum()), "valid_targets": int((valid_end - train_end).sum()),
        "test_targets": int((lengths - valid_end).sum()), **_removed(counts),
    }
    if raw.impressions is not None:  # ranking data: impressions with labels, split like the sequences
        manifest_counts.update(write_impressions(tmp, raw.impressions(), cuts, str(config.input)))
    log.info("%d users, %d items, %d interactions (%d train, %d valid, %d test targets); removed: %s",
             manifest_counts["users"], manifest_counts["items"], manifest_counts["interactions"],
             manifest_counts["train_interactions"], manifest_counts["valid_targets"],
             manifest_counts["test_targets"], _removed_summary(counts))
    return Manifest(
        format_version=schema.FORMAT_VERSION, source={}, counts=manifest_counts, filters=_filters(config, counts),
        split=_split_info(config, cuts), features=features, actions=encoder.actions.names(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def _removed(counts: _Counts) -> dict[str, int]:
    names = ("events_read", "duplicates_found", "removed_min_rating", "removed_dedupe", "removed_kcore_events",
             "removed_kcore_users", "removed_kcore_items", "removed_short_users", "removed_short_user_events")
    return {name: int(getattr(counts, name)) for name in names}


def _removed_summary(counts: _Counts) -> str:
    return ", ".join(f"{k}={v}" for k, v in _removed(counts).items() if k.startswith("removed") and v) or "nothing"


def _filters(config: PrepareConfig, counts: _Counts) -> dict[str, Any]:
    return {
        "min_rating": {"threshold": config.min_rating, "removed_events": counts.removed_min_rating},
        "dedupe": {"policy": config.dedupe, "duplicates_found": counts.duplicates_found,
                   "removed_events": counts.removed_dedupe},
        "kcore": {"k": config.kcore, "iterate": config.kcore_iterate, "iterations": counts.kcore_iterations,
                  "removed_users": counts.removed_kcore_users, "removed_items": counts.removed_kcore_items,
                  "removed_events": counts.removed_kcore_events},
        "short_users": {"policy": config.short_users,
                        "min_events": LOO_MIN_EVENTS if config.split == "leave_one_out" else 1,
                        "removed_users": counts.removed_short_users,
                        "removed_events": counts.removed_short_user_events},
    }


def _split_info(config: PrepareConfig, cuts: tuple[int, int] | None) -> dict[str, Any]:
    if cuts is None:
        return {"policy": "leave_one_out"}
    info: dict[str, Any] = {"policy": "time", "valid_cut": cuts[0], "test_cut": cuts[1]}
    if config.valid_frac is not None:
        info.update(valid_frac=config.valid_frac, test_frac=config.test_frac)
    return info


def _source(config: PrepareConfig, raw: RawLog, digests: list[str]) -> dict[str, Any]:
    base = config.input if config.input.is_dir() else config.input.parent
    files = {}
    for path, digest in zip(raw.files, digests):
        path = Path(path)
        name = str(path.relative_to(base)) if path.is_relative_to(base) else path.name
        files[name] = {"sha256": digest, "bytes": path.stat().st_size}
    options = json.loads(json.dumps(config.reader_options, default=str))
    return {"format": raw.format, "input": config.input.name, "files": files, "reader_options": options}


# --------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``seqrec prepare``."""
    parser.add_argument("input", type=Path, help="raw log file or folder, as the reader for --format expects it")
    parser.add_argument("output", type=Path, help="dataset folder to create (must not exist unless --overwrite)")
    parser.add_argument("--format", "-f", required=True, choices=sorted(FORMATS), help="reader for the raw log")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output folder (only after the new one is complete)")
    parser.add_argument("--append-to", type=Path, metavar="DATASET",
                        help="write output as a new version of the dataset folder DATASET plus the events of input: "
                             "old user/item indices kept, new ones added at the end (trainer.data.append)")
    reader = parser.add_argument_group("reader options")
    reader.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option, repeatable, passed as a string (e.g. --option meta=items.csv)")
    reader.add_argument("--columns", metavar="FIELD=NAME,...",
                        help="source column of each event field, e.g. user=uid,item=iid,timestamp=ts")
    filters = parser.add_argument_group("filters (applied in this order)")
    filters.add_argument("--min-rating", type=float, metavar="R",
                         help="drop events rated below R and events without a rating (default: keep all)")
    filters.add_argument("--dedupe", choices=DEDUPE_POLICIES, default="none",
                         help="none: keep every event; exact: drop events repeating an earlier (user, item, "
                              "timestamp); first: keep only each user's first event per item (default: none)")
    filters.add_argument("--kcore", type=int, default=0, metavar="K",
                         help="drop items and users with fewer than K events (default 0: off)")
    filters.add_argument("--kcore-single-pass", action="store_true",
                         help="filter items then users once, instead of repeating until every remaining user and "
                              "item has K events")
    filters.add_argument("--short-users", choices=SHORT_USER_POLICIES, default="error",
                         help="users too short for the split (leave-one-out: < 3 events; time: no event before "
                              "the validation cut): stop with an error naming one, or drop them (default: error)")
    split = parser.add_argument_group("split")
    split.add_argument("--split", choices=SPLITS, default="leave_one_out",
                       help="leave_one_out: last event = test, second-to-last = validation; time: global cuts "
                            "(default: leave_one_out)")
    split.add_argument("--valid-cut", type=int, metavar="TS",
                       help="time split: events at or after TS (and before --test-cut) are validation targets")
    split.add_argument("--test-cut", type=int, metavar="TS", help="time split: events at or after TS are test targets")
    split.add_argument("--valid-frac", type=float, metavar="F",
                       help="time split: validation window as a fraction of the log's time range (with --test-frac)")
    split.add_argument("--test-frac", type=float, metavar="F",
                       help="time split: test window = the last F of the log's time range (instead of the cuts)")
    other = parser.add_argument_group("features and scale")
    other.add_argument("--buckets", type=int, default=10, metavar="N",
                       help="quantile buckets for numeric side features such as price or age (default 10)")
    other.add_argument("--spill-threshold", type=int, default=SPILL_THRESHOLD, metavar="EVENTS",
                       help=f"events kept in memory before spilling to partitions on disk (default {SPILL_THRESHOLD})")
    other.add_argument("--partitions", type=int, default=SPILL_PARTITIONS, metavar="P",
                       help=f"user-hash partitions when spilling; each must fit in memory (default {SPILL_PARTITIONS})")


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """`PrepareConfig` from parsed ``seqrec prepare`` arguments."""
    options: dict[str, Any] = dict(_key_value(item, "--option") for item in args.option)
    if args.columns:
        options["columns"] = dict(_key_value(item, "--columns") for item in args.columns.split(","))
    return PrepareConfig(
        format=args.format, input=args.input, output=args.output, overwrite=args.overwrite,
        min_rating=args.min_rating, kcore=args.kcore, kcore_iterate=not args.kcore_single_pass,
        dedupe=args.dedupe, split=args.split, valid_cut=args.valid_cut, test_cut=args.test_cut,
        valid_frac=args.valid_frac, test_frac=args.test_frac, short_users=args.short_users, buckets=args.buckets,
        reader_options=options, spill_threshold=args.spill_threshold, partitions=args.partitions,
    )


def _key_value(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag} expects KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def run(args: argparse.Namespace) -> int:
    """``seqrec prepare``: build the dataset folder and log a one-line summary."""
    if args.append_to is not None:
        from trainer.data.append import run_append

        return run_append(args)
    config = config_from_args(args)
    manifest = prepare(config)
    counts = manifest.counts
    log.info("wrote %s: %d users, %d items, %d interactions", config.output, counts["users"], counts["items"],
             counts["interactions"])
    return 0
