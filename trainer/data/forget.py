"""Forget users: ``seqrec forget DATASET USER_ID...`` writes a new dataset version without their events.

The new version (default: the sibling folder ``DATASET-v<N>``) has no row, event or id of the named users:
their rows leave users.parquet and sequences.parquet, the other users are renumbered 0..U-1 in the same order,
item indices stay as they are (an item only they interacted with keeps its row, with its train popularity
recomputed without them, so checkpoints keep meaning the same items), and the split keeps its cuts, so no other
user's split moves. The manifest's lineage records how many users were removed, never who.

What it does not do: DATASET itself is left as it is (runs trained on it stay reproducible) until you delete it;
do so (and the raw log it came from) to complete a deletion. A model trained or fine-tuned afterwards on the new
version never sees the users' events; the exported model keeps no per-user state (a request carries its history),
so nothing in serving holds it either. Models trained on the old version did see it: retrain or fine-tune them
on the new version (`trainer.init_from`) and replace their exports. A later ``prepare --append-to`` of a log
that still holds their events adds them back (as new users): remove them from incoming logs too.

Example:
  seqrec synth --output data/day1 --users 2000 --seed 1 && seqrec prepare --format synthetic data/day1 data/shop
  seqrec forget data/shop u17 u1203          # -> data/shop-v2
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainer.data import versions
from trainer.data.schema import Manifest
from trainer.data.versions import NewVersion
from trainer.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def forget(dataset: str | Path, user_ids: list[str], output: str | Path | None = None, overwrite: bool = False,
           missing_ok: bool = False) -> Manifest:
    """Write a version of ``dataset`` without the events and rows of the users with raw ids ``user_ids``."""
    if not user_ids:
        raise ConfigError("name at least one USER_ID to forget")
    output = Path(output) if output is not None else versions.default_output(dataset)
    parent = versions.read_version(dataset)
    if output.resolve() == parent.path.resolve():
        raise ConfigError("the new version must go to another folder than the dataset it is made from")
    raw_ids = parent.users["raw_id"]
    rows = pc.index_in(pa.array([str(u) for u in user_ids], pa.string()), value_set=raw_ids)
    missing = [u for u, valid in zip(user_ids, rows.is_valid().to_pylist()) if not valid]
    if missing and not missing_ok:
        raise DataError("no such user in the dataset (pass --missing-ok to skip unknown ids)",
                        file=parent.path / "users.parquet", user=str(missing[0]))
    drop = np.zeros(parent.users.num_rows, bool)
    drop[rows.drop_null().to_numpy().astype(np.int64)] = True
    if drop.all():
        raise DataError("forgetting every user would leave an empty dataset", file=parent.path)
    keep = ~drop
    events = parent.events.take(keep[parent.events.user])
    events.user = (np.cumsum(keep) - 1)[events.user]
    users = parent.users.filter(pa.array(keep))
    users = users.set_column(0, "user_idx", pa.array(np.arange(users.num_rows, dtype=np.int32)))
    removed_events = len(parent.events.user) - len(events.user)
    operation = {"operation": "forget", "users_removed": int(drop.sum()), "events_removed": int(removed_events),
                 "items_kept": parent.manifest.num_items}
    manifest = versions.write_version(
        NewVersion(parent=parent, items=parent.items, users=users, events=events, split=parent.manifest.split,
                   operation=operation, counts={"forgotten_users": int(drop.sum())}, source=parent.manifest.source,
                   actions=parent.manifest.actions),
        output, overwrite=overwrite,
    )
    log.info("wrote %s (version %d): %d user(s) and %d event(s) removed; %s is unchanged (delete it to complete "
             "the deletion)", output, manifest.lineage["version"], int(drop.sum()), removed_events, parent.path)
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``seqrec forget``."""
    parser.add_argument("dataset", type=Path, help="dataset folder to derive the new version from (left unchanged)")
    parser.add_argument("user_ids", nargs="+", metavar="USER_ID", help="raw user ids (as in the raw log) to forget")
    parser.add_argument("--output", "-o", type=Path,
                        help="folder of the new version (default: DATASET-v<N>, N = the next version number)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--missing-ok", action="store_true",
                        help="skip ids that are not in the dataset instead of stopping with an error")


def run(args: argparse.Namespace) -> int:
    """``seqrec forget``."""
    forget(args.dataset, args.user_ids, args.output, overwrite=args.overwrite, missing_ok=args.missing_ok)
    return 0
