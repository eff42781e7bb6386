"""Side features of the items and users a new dataset version adds, coded the way their parent coded its own.

A dataset folder stores feature *codes*, not the vocabularies behind them (`trainer.data.features`: sorted
values -> 1..C over the dataset's own rows; numeric values -> quantile buckets with the edges in the manifest).
When the new log's reader has a side table (e.g. MovieLens' movies.dat), the parent's vocabulary is rebuilt from
that table's rows for the parent's ids and accepted only if it reproduces the parent's codes exactly; new values
then get the next codes (the cardinality grows), bucket features reuse the parent's edges. Anything that cannot
be reproduced is coded 0 (unknown), and the lineage says which.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def code_new_rows(parent: pa.Table, specs: dict[str, dict[str, Any]], side: pa.Table | None, key: str,
                  new_ids: pa.Array) -> tuple[dict[str, pa.Array], dict[str, dict[str, Any]], dict[str, str]]:
    """Feature columns for ``new_ids``, the updated feature specs, and how each feature was coded."""
    columns, out_specs, status = {}, {name: dict(spec) for name, spec in specs.items()}, {}
    for name, spec in specs.items():
        if side is None or name not in side.column_names or key not in side.column_names:
            status[name] = "unknown (no such feature in the new log)"
            continue
        keys = side[key].combine_chunks().cast(pa.string())
        values = side[name].combine_chunks()
        new_values = values.take(pc.index_in(new_ids, value_set=keys))
        if spec["kind"] == "bucket":
            columns[name] = _bucket(new_values, np.asarray(spec["edges"], np.float64))
            status[name] = "coded (parent's bucket edges)"
            continue
        old_values = values.take(pc.index_in(parent["raw_id"], value_set=keys))
        coded = _categorical(old_values, new_values, parent[name].combine_chunks(), spec["kind"] == "multi")
        if coded is None:
            status[name] = "unknown (the parent's codes could not be reproduced from the new log)"
            continue
        columns[name], added = coded
        out_specs[name]["cardinality"] = int(spec["cardinality"]) + added
        status[name] = f"coded ({added} new values)"
    return columns, out_specs, status


def _bucket(values: pa.Array, edges: np.ndarray) -> pa.Array:
    numbers = pc.fill_null(values.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    out = np.zeros(len(numbers), np.int32)
    finite = np.isfinite(numbers)
    out[finite] = 1 + np.searchsorted(edges, numbers[finite], side="left")
    return pa.array(out)


def _categorical(old: pa.Array, new: pa.Array, parent_codes: pa.Array,
                 multi: bool) -> tuple[pa.Array, int] | None:
    """Codes of ``new`` in the vocabulary that reproduces ``parent_codes`` from ``old``, or None."""
    flat_old = pc.list_flatten(old) if multi else old
    flat_old = flat_old.cast(pa.string())
    vocab = pc.unique(flat_old.drop_null())
    vocab = vocab.take(pc.sort_indices(vocab))
    if not _same(_encode(old, vocab, multi), parent_codes, multi):
        return None
    flat_new = (pc.list_flatten(new) if multi else new).cast(pa.string())
    unseen = pc.unique(flat_new.drop_null().filter(pc.invert(pc.is_in(flat_new.drop_null(), value_set=vocab))))
    unseen = unseen.take(pc.sort_indices(unseen))
    extended = pa.concat_arrays([vocab, unseen])
    return _encode(new, extended, multi), len(unseen)


def _encode(values: pa.Array, vocab: pa.Array, multi: bool) -> pa.Array:
    """Codes 1..C of values in ``vocab`` (null/missing -> 0); multi-valued: empty or missing lists -> [0]."""
    if not multi:
        codes = pc.fill_null(pc.add(pc.index_in(values.cast(pa.string()), value_set=vocab), 1), 0)
        return codes.cast(pa.int32())
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.fill_null(pc.add(pc.index_in(pc.list_flatten(values).cast(pa.string()), value_set=vocab), 1), 0)
    flat = flat.to_numpy(zero_copy_only=False).astype(np.int32)
    out_length = np.maximum(lengths, 1)
    offsets = np.r_[0, np.cumsum(out_length)]
    out = np.zeros(offsets[-1], np.int32)
    within = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[offsets[:-1][np.repeat(np.arange(len(lengths)), lengths)] + within] = flat
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(out))


def _same(codes: pa.Array, parent: pa.Array, multi: bool) -> bool:
    if multi:
        return codes.to_pylist() == parent.to_pylist()
    return np.array_equal(codes.to_numpy(zero_copy_only=False), parent.to_numpy(zero_copy_only=False))
