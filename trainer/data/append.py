"""Incremental prepare: ``seqrec prepare --append-to DATASET NEW_LOG OUTPUT`` writes a new dataset version.

The new version keeps every user and item index of DATASET (row i of items.parquet is the same raw item in
both, so a checkpoint trained on DATASET keeps meaning the same items; see `trainer.growth`), gives new users
and items the next indices in order of first appearance in NEW_LOG, merges each user's history in time order
(an old and a new event at the same time keep that order), and recomputes the split positions and the train
popularity. DATASET itself is not touched, so the old version stays readable; OUTPUT's manifest records the
lineage (`trainer.data.versions`).

The parent's filters are applied to the new events: min-rating, the dedupe policy (over the merged history,
so a repeat of an old event is caught) and the short-user policy. K-core filtering is not re-applied: it would
remove indexed items. A time split with fractions is recomputed over the merged time range; fixed cuts are kept
unless --valid-cut/--test-cut give new ones. New items' and users' side features are coded like the parent's when
the new log's reader has them and the parent's codes can be reproduced from it, else 0 (unknown)
(`trainer.data.version_features`).

Example:
  seqrec synth --output data/day2 --users 3000 --seed 2 && seqrec synth --output data/day1 --users 2000 --seed 1
  seqrec prepare --format synthetic data/day1 data/shop
  seqrec prepare --format synthetic --append-to data/shop data/day2 data/shop-v2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from trainer.data import prepare as full_prepare
from trainer.data import versions
from trainer.data.readers import open_reader
from trainer.data.readers.base import RawLog, sha256_file
from trainer.data.schema import Manifest
from trainer.data.version_features import code_new_rows
from trainer.data.versions import Events, NewVersion, Version
from trainer.data.vocab import Vocabulary
from trainer.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass(kw_only=True)
class AppendConfig:
    """What to append to which dataset version, and where the new version goes.

    Args:
        parent: the dataset folder to extend (left unchanged).
        format / input / reader_options: the new log and its reader, as for `seqrec prepare`.
        output: the new version's folder. overwrite: replace an existing ``output``.
        valid_cut / test_cut: new time-split cuts (time-split parents only); None keeps the parent's policy.
    """

    parent: Path
    format: str
    input: Path
    output: Path
    overwrite: bool = False
    reader_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    valid_cut: int | None = None
    test_cut: int | None = None

    def __post_init__(self) -> None:
        self.parent, self.input, self.output = Path(self.parent), Path(self.input), Path(self.output)


def append(config: AppendConfig, raw: RawLog | None = None) -> Manifest:
    """Write ``config.output``: ``config.parent`` plus the events of the new log; return its manifest."""
    parent = versions.read_version(config.parent)
    if Path(config.output).resolve() == parent.path.resolve():
        raise ConfigError("the new version must go to another folder than the one it extends (the old stays)")
    raw = raw or open_reader(config.format, config.input, **config.reader_options)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as hasher:
        digests = [hasher.submit(sha256_file, path) for path in raw.files]
        encoder, new, counts = _read_new(parent, config, raw)
        source = full_prepare._source(_prepare_config(parent, config), raw, [d.result() for d in digests])
    merged = versions.sort_events(Events.concat(parent.events, new))
    cuts = _cuts(parent, config, merged)
    merged = _dedupe(merged, parent, counts)
    features: dict[str, Any] = {}
    merged, users = _short_users(merged, parent, encoder.users, cuts, counts, raw.user_features, features)
    merged, items = _compact_items(merged, parent, encoder.items, raw.item_features, features)
    split = _split_entry(parent.manifest.split, cuts, recomputed=config.valid_cut is None)
    operation = {"operation": "append", "source": source, "new_users": users.num_rows - parent.users.num_rows,
                 "new_items": items.num_rows - parent.items.num_rows, "items_kept": parent.manifest.num_items,
                 "users_kept": _users_kept(parent, users),
                 "features": {kind: status for kind, (_, status) in features.items()}, **counts}
    manifest = versions.write_version(
        NewVersion(parent=parent, items=items, users=users, events=merged, split=split, operation=operation,
                   counts={"appended_events": counts["events_read"] - counts["removed_min_rating"]},
                   source=parent.manifest.source, actions=encoder.actions.names(),
                   features={kind: specs for kind, (specs, _) in features.items()}),
        config.output, overwrite=config.overwrite,
    )
    log.info("version %d: +%d users, +%d items, %d interactions", manifest.lineage["version"],
             operation["new_users"], operation["new_items"], manifest.counts["interactions"])
    return manifest


def _prepare_config(parent: Version, config: AppendConfig) -> full_prepare.PrepareConfig:
    """The parent's reading filters as a `PrepareConfig` (the encoder and the manifest's source read it)."""
    threshold = parent.manifest.filters.get("min_rating", {}).get("threshold")
    return full_prepare.PrepareConfig(format=config.format, input=config.input, output=config.output,
                                      min_rating=threshold, reader_options=config.reader_options)


def _seeded(raw_ids: pa.Array | list[str]) -> Vocabulary:
    """A vocabulary whose first codes are ``raw_ids`` in order (the parent's indices)."""
    vocab = Vocabulary()
    codes = vocab.encode(pa.array(raw_ids, pa.string()))
    if not np.array_equal(codes, np.arange(len(codes))):
        raise DataError("raw ids of the dataset are not unique; re-run `seqrec prepare`", field="raw_id")
    return vocab


def _read_new(parent: Version, config: AppendConfig, raw: RawLog) -> tuple[Any, Events, dict[str, int]]:
    """Encode the new log against the parent's vocabularies (new ids get the next codes)."""
    counts = full_prepare._Counts()
    encoder = full_prepare._Encoder(_prepare_config(parent, config), raw, counts)
    encoder.users = _seeded(parent.users["raw_id"])
    encoder.items = _seeded(parent.items["raw_id"])
    encoder.actions = _seeded(parent.manifest.actions)
    encoder.has_actions = parent.events.action is not None
    chunks = []
    with tqdm(desc="read new log", unit="ev", unit_scale=True, disable=None) as bar:
        for batch in raw.events():
            chunks.append(encoder.encode(batch))
            bar.update(batch.num_rows)
    if not chunks or not sum(len(c["user"]) for c in chunks):
        raise DataError("the new log has no events (after the parent's min-rating filter)", file=config.input)
    cat = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
    action = cat["action"] if encoder.has_actions else None
    new = Events(cat["user"].astype(np.int64), (cat["item"] + 1).astype(np.int32), cat["ts"], action)
    return encoder, new, {"events_read": counts.events_read, "removed_min_rating": counts.removed_min_rating}


def _dedupe(events: Events, parent: Version, counts: dict[str, int]) -> Events:
    """The parent's dedupe policy over the merged, sorted history."""
    policy = parent.manifest.filters.get("dedupe", {}).get("policy", "none")
    counts["removed_dedupe"] = 0
    if policy == "none":
        return events
    cols = {"user": events.user, "item": events.item, "ts": events.ts}
    if policy == "exact":
        dup = full_prepare._exact_duplicates(cols)
    else:
        dup = full_prepare._repeated_pairs(cols, int(events.item.max()) + 1)
    counts["removed_dedupe"] = int(dup.sum())
    return events.take(~dup)


def _short_users(events: Events, parent: Version, users: Vocabulary, cuts: tuple[int, int] | None,
                 counts: dict[str, int], side: pa.Table | None, features: dict[str, Any]) -> tuple[Events, pa.Table]:
    """Apply the parent's short-user policy; return the events over compact user indices and users.parquet."""
    num = len(users)
    length, train_end, _ = versions.split_positions(events, num, cuts)
    short = versions.short_users(length, train_end, cuts) & (length > 0)
    if short.any() and parent.manifest.filters.get("short_users", {}).get("policy", "error") != "drop":
        first = int(np.flatnonzero(short)[0])
        raise full_prepare._short_user_error(users.raw_ids()[first].as_py(), int(length[first]), cuts)
    counts["removed_short_users"] = int(short.sum())
    keep_user = (length > 0) & ~short
    events = events.take(keep_user[events.user])
    new_index = np.cumsum(keep_user) - 1
    events.user = new_index[events.user]
    old = parent.users.num_rows
    kept = np.flatnonzero(keep_user)
    table = parent.users.take(pa.array(kept[kept < old]))
    new_ids = users.raw_ids().take(pa.array(kept[kept >= old]))
    added = versions.new_rows(parent.users, new_ids, table.num_rows, "user_idx",
                              _features(parent, "users", side, new_ids, features))
    table = pa.concat_tables([table.set_column(0, "user_idx", pa.array(np.arange(table.num_rows), pa.int32())),
                              added])
    return events, table


def _compact_items(events: Events, parent: Version, items: Vocabulary, side: pa.Table | None,
                   features: dict[str, Any]) -> tuple[Events, pa.Table]:
    """Keep every parent item (its index is the contract); new items only if an event still names them."""
    old = parent.items.num_rows
    seen = np.bincount(events.item, minlength=len(items) + 1)[1:] > 0
    keep = np.r_[np.ones(old, bool), seen[old:]]
    index = np.r_[0, np.cumsum(keep)].astype(np.int32)  # old item_idx -> new item_idx
    events.item = index[events.item]
    new_codes = np.flatnonzero(keep[old:]) + old
    new_ids = items.raw_ids().take(pa.array(new_codes))
    added = versions.new_rows(parent.items, new_ids, old + 1, "item_idx",
                              _features(parent, "items", side, new_ids, features))
    return events, pa.concat_tables([parent.items, added])


def _features(parent: Version, kind: str, side: pa.Table | None, new_ids: pa.Array,
              out: dict[str, Any]) -> dict[str, pa.Array]:
    """Code the new rows' features like the parent's; record the specs and statuses in ``out[kind]``."""
    table = parent.items if kind == "items" else parent.users
    specs = parent.manifest.features.get(kind, {})
    columns, new_specs, status = code_new_rows(table, specs, side, kind[:-1], new_ids)
    out[kind] = (new_specs, status)
    return columns


def _users_kept(parent: Version, users: pa.Table) -> int:
    """How many leading users keep their index (all of them unless the short-user policy dropped one)."""
    old = parent.users["raw_id"].to_numpy(zero_copy_only=False)
    new = users["raw_id"].to_numpy(zero_copy_only=False)[: len(old)]
    same = old[: len(new)] == new
    return int(len(same) if same.all() else np.argmin(same))


def _cuts(parent: Version, config: AppendConfig, events: Events) -> tuple[int, int] | None:
    """Cuts of the new version: given ones, else the parent's fractions over the merged range, else its cuts."""
    split = parent.manifest.split
    given = (config.valid_cut, config.test_cut)
    if split["policy"] == "leave_one_out":
        if any(c is not None for c in given):
            raise ConfigError(f"{parent.path} uses a leave-one-out split; --valid-cut/--test-cut do not apply")
        return None
    if any(c is not None for c in given):
        if None in given or config.valid_cut > config.test_cut:
            raise ConfigError("give both --valid-cut and --test-cut, with valid-cut <= test-cut")
        return int(config.valid_cut), int(config.test_cut)
    if split.get("valid_frac") is not None:
        t_min, t_max = int(events.ts.min()), int(events.ts.max())
        test_cut = t_max - int(split["test_frac"] * (t_max - t_min))
        return test_cut - int(split["valid_frac"] * (t_max - t_min)), test_cut
    return versions.cuts_of(split)


def _split_entry(split: dict[str, Any], cuts: tuple[int, int] | None, recomputed: bool) -> dict[str, Any]:
    """The new manifest's split: the parent's policy with the cuts actually used (and its fractions, if used)."""
    if cuts is None:
        return {"policy": "leave_one_out"}
    entry: dict[str, Any] = {"policy": "time", "valid_cut": cuts[0], "test_cut": cuts[1]}
    if recomputed and split.get("valid_frac") is not None:
        entry.update(valid_frac=split["valid_frac"], test_frac=split["test_frac"])
    return entry


# --------------------------------------------------------------------------------------------------- CLI


def check_args(args: argparse.Namespace) -> None:
    """Reject `seqrec prepare` options that cannot apply to an append (each names the option)."""
    if args.kcore:
        raise ConfigError("--kcore is not re-applied with --append-to (it would remove items that have an index)")
    for flag, value in (("--valid-frac", args.valid_frac), ("--test-frac", args.test_frac)):
        if value is not None:
            raise ConfigError(f"{flag} does not apply with --append-to; give --valid-cut and --test-cut")
    if args.min_rating is not None or args.dedupe != "none" or args.short_users != "error":
        raise ConfigError("--min-rating/--dedupe/--short-users come from the dataset being extended with "
                          "--append-to; drop them")


def run_append(args: argparse.Namespace) -> int:
    """``seqrec prepare --append-to DATASET NEW_LOG OUTPUT``."""
    check_args(args)
    options = full_prepare.config_from_args(args).reader_options
    config = AppendConfig(parent=args.append_to, format=args.format, input=args.input, output=args.output,
                          overwrite=args.overwrite, reader_options=options, valid_cut=args.valid_cut,
                          test_cut=args.test_cut)
    manifest = append(config)
    log.info("wrote %s (version %d of %s)", config.output, manifest.lineage["version"], config.parent)
    return 0
