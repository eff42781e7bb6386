"""Print a dataset folder's summary: source, counts, filters, split, sequence lengths and item popularity.

Reads manifest.json, items.parquet and sequences.parquet (streamed by row group) and prints:
  * the manifest: source files, counts, what each filter removed, the split policy and features;
  * a histogram of sequence lengths in log-spaced (power-of-two) bins;
  * split sizes: train interactions, validation and test targets, users holding each;
  * popularity: the top items (raw ids and train counts), how many items have <= 1 / <= 5 train
    interactions, and the share of train interactions going to the top 1% / 10% of items.

Example:
  seqrec inspect data/ml1m
  seqrec inspect data/ml1m --json > ml1m.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.data import schema
from trainer.errors import DataError

BAR_WIDTH = 40
MAIN_COUNTS = ("users", "items", "interactions", "train_interactions", "valid_targets", "test_targets")


def inspect_dataset(folder: str | Path, top: int = 10) -> dict[str, Any]:
    """The summary of a dataset folder as plain JSON-ready data."""
    folder = Path(folder)
    manifest = schema.read_manifest(folder)
    lengths, train_end, valid_end = _read_positions(folder / schema.SEQUENCES)
    return {
        "dataset": str(folder),
        "manifest": dataclasses.asdict(manifest),
        "lengths": _length_summary(lengths),
        "split": {
            "policy": manifest.split.get("policy"),
            "train_interactions": int(train_end.sum()),
            "valid_targets": int((valid_end - train_end).sum()),
            "test_targets": int((lengths - valid_end).sum()),
            "users_with_valid": int((valid_end > train_end).sum()),
            "users_with_test": int((lengths > valid_end).sum()),
        },
        "popularity": _popularity(folder / schema.ITEMS, top),
    }


def _read_positions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user sequence length, ``train_end`` and ``valid_end``, streamed one row group at a time."""
    if not path.is_file():
        raise DataError("missing file: not a complete dataset folder", file=path)
    lengths, train_end, valid_end = [], [], []
    for batch in pq.ParquetFile(path).iter_batches(columns=["items", "train_end", "valid_end"]):
        lengths.append(pc.list_value_length(batch.column("items")).to_numpy(zero_copy_only=False))
        train_end.append(batch.column("train_end").to_numpy())
        valid_end.append(batch.column("valid_end").to_numpy())
    if not lengths:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return tuple(np.concatenate(a).astype(np.int64) for a in (lengths, train_end, valid_end))


def _length_summary(lengths: np.ndarray) -> dict[str, Any]:
    """Min / median / mean / max and a histogram over bins [1, 2), [2, 4), [4, 8), ..."""
    if len(lengths) == 0:
        return {"users": 0, "histogram": []}
    low = int(math.floor(math.log2(max(1, int(lengths.min())))))  # no empty bins below the shortest user
    high = max(low + 1, int(math.ceil(math.log2(int(lengths.max()) + 1))))
    edges = 2 ** np.arange(low, high + 1)
    counts = np.histogram(lengths, bins=edges)[0]
    histogram = [{"min": int(lo), "max": int(hi) - 1, "users": int(n)} for lo, hi, n in zip(edges, edges[1:], counts)]
    return {
        "users": len(lengths), "min": int(lengths.min()), "median": float(np.median(lengths)),
        "mean": float(lengths.mean()), "max": int(lengths.max()), "histogram": histogram,
    }


def _popularity(path: Path, top: int) -> dict[str, Any]:
    """Head (top items by train count) and tail statistics of item popularity."""
    if not path.is_file():
        raise DataError("missing file: not a complete dataset folder", file=path)
    table = pq.read_table(path, columns=["item_idx", "raw_id", "popularity"])
    popularity = table["popularity"].to_numpy().astype(np.int64)
    order = np.lexsort((table["item_idx"].to_numpy(), -popularity))  # most popular first, ties by item_idx
    head = table.take(order[:top]).to_pylist()
    total = int(popularity.sum())
    ranked = np.cumsum(popularity[order])
    summary = {
        "items": len(popularity),
        "train_interactions": total,
        "head": head,
        "items_le_1": int((popularity <= 1).sum()),
        "items_le_5": int((popularity <= 5).sum()),
    }
    for name, fraction in (("top_1pct_share", 0.01), ("top_10pct_share", 0.10)):
        count = max(1, math.ceil(fraction * len(popularity))) if len(popularity) else 0
        summary[name] = float(ranked[count - 1] / total) if count and total else 0.0
    return summary


def format_report(summary: dict[str, Any]) -> str:
    """The summary as readable text."""
    manifest = summary["manifest"]
    lines = [f"dataset {summary['dataset']} (format version {manifest['format_version']}, "
             f"created {manifest['created']})"]
    lines += _source_lines(manifest["source"])
    lines.append("counts:")
    counts = manifest["counts"]
    names = [n for n in MAIN_COUNTS if n in counts] + sorted(set(counts) - set(MAIN_COUNTS))
    lines += [f"  {name:<28} {counts[name]:>14,}" for name in names]
    lines.append("filters:")
    lines += [f"  {name:<12} {json.dumps(value, sort_keys=True)}" for name, value in manifest["filters"].items()]
    lines.append(f"split: {json.dumps(manifest['split'], sort_keys=True)}")
    if manifest.get("lineage"):
        lineage = manifest["lineage"]
        steps = ", ".join(step["operation"] for step in lineage["history"])
        lines.append(f"version {lineage['version']} of {lineage['parent']['path']} ({steps}; the first "
                     f"{lineage['items_kept']:,} items keep their index)")
    split = summary["split"]
    lines.append(f"  train interactions {split['train_interactions']:,}; validation targets "
                 f"{split['valid_targets']:,} ({split['users_with_valid']:,} users); test targets "
                 f"{split['test_targets']:,} ({split['users_with_test']:,} users)")
    for kind in ("items", "users"):
        for name, spec in manifest["features"].get(kind, {}).items():
            lines.append(f"feature {kind}.{name}: {spec['kind']}, cardinality {spec['cardinality']}")
    if manifest["actions"]:
        lines.append(f"actions: {', '.join(manifest['actions'])}")
    lines += _length_lines(summary["lengths"])
    lines += _popularity_lines(summary["popularity"])
    return "\n".join(lines)


def _source_lines(source: dict[str, Any]) -> list[str]:
    lines = [f"source: format {source.get('format')!r}, input {source.get('input')!r}"]
    for name, info in source.get("files", {}).items():
        if isinstance(info, dict):
            lines.append(f"  {name}: {info.get('bytes', 0):,} bytes, sha256 {info.get('sha256', '')[:16]}...")
        else:
            lines.append(f"  {name}: sha256 {str(info)[:16]}...")
    return lines


def _length_lines(lengths: dict[str, Any]) -> list[str]:
    if not lengths["users"]:
        return ["sequence lengths: no users"]
    lines = [f"sequence lengths: min {lengths['min']}, median {lengths['median']:g}, "
             f"mean {lengths['mean']:.2f}, max {lengths['max']}"]
    peak = max(row["users"] for row in lengths["histogram"]) or 1
    for row in lengths["histogram"]:
        label = f"{row['min']}" if row["min"] == row["max"] else f"{row['min']}-{row['max']}"
        bar = "#" * math.ceil(BAR_WIDTH * row["users"] / peak)
        share = 100 * row["users"] / lengths["users"]
        lines.append(f"  {label:>13} {row['users']:>10,} {share:5.1f}% {bar}")
    return lines


def _popularity_lines(popularity: dict[str, Any]) -> list[str]:
    items = popularity["items"] or 1
    lines = [f"popularity (train interactions per item), top {len(popularity['head'])}:"]
    lines += [f"  {row['item_idx']:>8} {row['raw_id']!s:<24} {row['popularity']:>12,}" for row in popularity["head"]]
    lines.append(f"  items with <= 1 train interaction: {popularity['items_le_1']:,} "
                 f"({100 * popularity['items_le_1'] / items:.1f}%), <= 5: {popularity['items_le_5']:,} "
                 f"({100 * popularity['items_le_5'] / items:.1f}%)")
    lines.append(f"  share of train interactions: top 1% of items {100 * popularity['top_1pct_share']:.1f}%, "
                 f"top 10% {100 * popularity['top_10pct_share']:.1f}%")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``seqrec inspect``."""
    parser.add_argument("dataset", type=Path, help="dataset folder written by `seqrec prepare`")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="how many most popular items to list")


def run(args: argparse.Namespace) -> int:
    """``seqrec inspect``: print the summary."""
    summary = inspect_dataset(args.dataset, top=args.top)
    print(json.dumps(summary, indent=2) if args.json else format_report(summary))
    return 0
