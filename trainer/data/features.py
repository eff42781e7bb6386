"""Side-feature encoding for items.parquet / users.parquet.

Each feature column of a reader's side table becomes int32 codes aligned with the dataset's items or users:
categorical and multi-valued features map their sorted values to 1..C (0 = unknown or missing), numeric ones
to quantile buckets. The manifest gets one spec per feature (kind, cardinality, bucket edges).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.data.readers.base import RawLog
from trainer.errors import DataError

# Columns of items.parquet / users.parquet that a feature may not be named.
RESERVED = {"items": ("item_idx", "raw_id", "popularity"), "users": ("user_idx", "raw_id")}


def write_side_table(path: Path, kind: str, raw: RawLog, raw_ids: pa.Array, extra: dict[str, pa.Array],
                     buckets: int) -> dict[str, dict[str, Any]]:
    """Write the side table of ``kind`` (items / users) for ``raw_ids``; return the feature specs."""
    table = raw.item_features if kind == "items" else raw.user_features
    features, specs = _feature_columns(table, kind, raw_ids, buckets)
    if kind == "items":
        first = {"item_idx": pa.array(np.arange(1, len(raw_ids) + 1, dtype=np.int32)), "raw_id": raw_ids}
    else:
        first = {"user_idx": pa.array(np.arange(len(raw_ids), dtype=np.int32)), "raw_id": raw_ids}
    pq.write_table(pa.table({**first, **extra, **features}), path)
    return specs


def _feature_columns(table: pa.Table | None, kind: str, raw_ids: pa.Array,
                     buckets: int) -> tuple[dict[str, pa.Array], dict[str, dict[str, Any]]]:
    """Encode a side-feature table (keyed by ``user``/``item``) into columns aligned with ``raw_ids``."""
    key = kind[:-1]
    if table is None:
        return {}, {}
    if key not in table.column_names:
        raise DataError(f"{key} features have no {key!r} column", field=key)
    keys = _as_string(table[key].combine_chunks())
    if keys.null_count:
        raise DataError(f"{key} features have a missing {key} id", field=key)
    if pc.count_distinct(keys).as_py() != len(keys):
        counts = pc.value_counts(keys)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise DataError(f"{key} {repeated!r} appears more than once in the {key} features", field=key)
    position = pc.index_in(keys, value_set=raw_ids)
    rows = np.flatnonzero(position.is_valid().to_numpy(zero_copy_only=False))
    target = position.take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(np.int64)
    columns, specs = {}, {}
    for name in table.column_names:
        if name == key:
            continue
        if name in RESERVED[kind]:
            raise DataError(f"feature column name is reserved in {kind}.parquet; rename it", field=name)
        values = table[name].combine_chunks().take(pa.array(rows))
        columns[name], specs[name] = _encode_feature(values, target, len(raw_ids), buckets, name)
    return columns, specs


def _encode_feature(values: pa.Array, target: np.ndarray, size: int, buckets: int,
                    name: str) -> tuple[pa.Array, dict[str, Any]]:
    """One feature: categorical / multi-valued codes (sorted values -> 1..C, 0 = unknown) or quantile buckets."""
    kind = values.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _encode_multi(values, target, size)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind) or \
            pa.types.is_temporal(kind):
        return _encode_bucket(values, target, size, buckets)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind) or \
            pa.types.is_dictionary(kind):
        codes, cardinality = _codes(values)
        out = np.zeros(size, np.int32)
        out[target] = codes
        return pa.array(out), {"kind": "categorical", "cardinality": cardinality}
    raise DataError(f"unsupported feature type {kind}; use string, list<string> or numeric", field=name)


def _codes(values: pa.Array) -> tuple[np.ndarray, int]:
    """Codes 1..C of values in sorted order (deterministic whatever the row order); null -> 0."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    vocab = pc.unique(values.drop_null())
    vocab = vocab.take(pc.sort_indices(vocab))
    codes = pc.fill_null(pc.add(pc.index_in(values, value_set=vocab), 1), 0)
    return codes.to_numpy(zero_copy_only=False).astype(np.int32), len(vocab) + 1


def _encode_multi(values: pa.Array, target: np.ndarray, size: int) -> tuple[pa.Array, dict[str, Any]]:
    """list<...> -> list<int32> codes; missing, null or empty lists become ``[0]``."""
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    codes, cardinality = _codes(pc.list_flatten(values))
    out_length = np.ones(size, np.int64)
    out_length[target] = np.maximum(lengths, 1)
    offsets = np.r_[0, np.cumsum(out_length)]
    flat = np.zeros(offsets[-1], np.int32)
    within = np.arange(len(codes)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat[offsets[np.repeat(target, lengths)] + within] = codes
    array = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat))
    return array, {"kind": "multi", "cardinality": cardinality}


def _encode_bucket(values: pa.Array, target: np.ndarray, size: int,
                   buckets: int) -> tuple[pa.Array, dict[str, Any]]:
    """Numeric -> quantile bucket ``1 + count(edges < value)``; missing/NaN -> 0."""
    if pa.types.is_temporal(values.type):
        values = values.cast(pa.int64())
    numbers = pc.fill_null(values.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    finite = np.isfinite(numbers)
    edges = np.zeros(0)
    if finite.any():
        edges = np.unique(np.quantile(numbers[finite], np.linspace(0, 1, buckets + 1)[1:-1]))
        edges = edges[edges < numbers[finite].max()]  # no empty top bucket
    out = np.zeros(size, np.int32)
    out[target[finite]] = 1 + np.searchsorted(edges, numbers[finite], side="left")
    spec = {"kind": "bucket", "cardinality": len(edges) + 2, "edges": edges.tolist(),
            "rule": "1 + number of edges < value; 0 = missing"}
    return pa.array(out), spec


def _as_string(column: pa.Array) -> pa.Array:
    return column if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) else column.cast(
        pa.string())


def load_side_features(folder: str | Path, kind: str) -> Any:
    """The feature codes of ``items.parquet`` (rows = item ids, row 0 padding) or ``users.parquet`` (rows =
    user_idx) declared in the manifest, as `modules.contract.SideFeatures` (multi-valued padded to the longest)."""
    import torch

    from modules.contract import SideFeatures
    from trainer.data.schema import read_manifest

    specs = read_manifest(folder).features.get(kind, {})
    if not specs:
        return SideFeatures()
    path = Path(folder) / f"{kind}.parquet"
    table = pq.read_table(path, columns=sorted(specs))
    shift = 1 if kind == "items" else 0  # item ids start at 1
    codes = {}
    for name in sorted(specs):
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            offsets = column.offsets.to_numpy().astype(np.int64)
            flat = column.values.to_numpy(zero_copy_only=False).astype(np.int64)
            lengths = np.diff(offsets)
            dense = np.zeros((len(column) + shift, max(int(lengths.max(initial=1)), 1)), np.int64)
            rows = np.repeat(np.arange(len(column)), lengths) + shift
            dense[rows, np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)] = flat
        else:
            dense = np.zeros((len(column) + shift, 1), np.int64)
            dense[shift:, 0] = column.to_numpy(zero_copy_only=False)
        if int(dense.max(initial=0)) >= specs[name]["cardinality"]:
            raise DataError(f"codes exceed the manifest's cardinality {specs[name]['cardinality']}", file=path,
                            field=name)
        codes[name] = torch.from_numpy(dense)
    return SideFeatures(codes=codes, cardinality={n: int(specs[n]["cardinality"]) for n in specs})
