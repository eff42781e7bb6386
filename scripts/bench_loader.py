"""Loader throughput: one full epoch with 0 and 2 workers, against a naive per-user Python loader.

The baseline is what many sequential-recommendation codebases do: read every sequence into Python lists, then per
user slice, left-pad to ``max_len`` and build dense tensors batch by batch. Both run in this process on the same
dataset folder, so the ratio is meaningful on any machine.

    python scripts/bench_loader.py                       # generates 100k users with log-normal lengths
    python scripts/bench_loader.py --dataset data/ml-1m   # or any dataset folder
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainer.data.loader import LoaderConfig, build_loader
from trainer.data.schema import FORMAT_VERSION, ITEMS, ROW_GROUP_USERS, SEQUENCES, USERS, Manifest


def generate(folder: Path, users: int, items: int, seed: int = 0) -> Path:
    """A leave-one-out dataset folder: log-normal lengths (median 30, long tail), Zipf-like item popularity."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(30), 1.0, size=users), 3, 2000).astype(np.int64)
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    values = rng.choice(np.arange(1, items + 1, dtype=np.int32), size=int(lengths.sum()), p=weights / weights.sum())
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    train_end, valid_end = lengths - 2, lengths - 1
    starts = np.repeat(np.asarray(offsets)[:-1], lengths)
    in_train = np.arange(len(values)) - starts < np.repeat(train_end, lengths)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "user_idx": pa.array(np.arange(users, dtype=np.int32)),
        "items": pa.ListArray.from_arrays(offsets, pa.array(values)),
        "timestamps": pa.ListArray.from_arrays(offsets, pa.array(np.arange(len(values), dtype=np.int64))),
        "train_end": pa.array(train_end.astype(np.int32)),
        "valid_end": pa.array(valid_end.astype(np.int32)),
    }), folder / SEQUENCES, row_group_size=ROW_GROUP_USERS)
    pq.write_table(pa.table({
        "item_idx": pa.array(np.arange(1, items + 1, dtype=np.int32)),
        "raw_id": pa.array(np.arange(1, items + 1).astype(str)),
        "popularity": pa.array(np.bincount(values[in_train], minlength=items + 1)[1:].astype(np.int64)),
    }), folder / ITEMS)
    pq.write_table(pa.table({"user_idx": pa.array(np.arange(users, dtype=np.int32)),
                             "raw_id": pa.array(np.arange(users).astype(str))}), folder / USERS)
    Manifest(format_version=FORMAT_VERSION, source={"format": "bench_loader"},
             counts={"users": users, "items": items, "interactions": int(lengths.sum()),
                     "train_interactions": int(in_train.sum())},
             filters={}, split={"policy": "leave_one_out"}).write(folder)
    return folder


def naive_batches(folder: Path, batch_size: int, max_len: int, seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """The common baseline: Python lists per user, left-padded dense (B, max_len) history and target tensors."""
    table = pq.read_table(folder / SEQUENCES, columns=["user_idx", "items", "train_end"])
    users, sequences = table.column("user_idx").to_pylist(), table.column("items").to_pylist()
    train_end = table.column("train_end").to_pylist()
    order = list(range(len(users)))
    random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        rows, histories, targets = [], [], []
        for row in order[start:start + batch_size]:
            seq = sequences[row][:train_end[row]][-(max_len + 1):]
            if len(seq) < 2:
                continue
            pad = [0] * (max_len + 1 - len(seq))
            rows.append(users[row])
            histories.append(pad + seq[:-1])
            targets.append(pad + seq[1:])
        yield torch.tensor(rows), torch.tensor(histories), torch.tensor(targets)


def measure(batches: Iterator, count_tokens) -> dict[str, float]:
    """Drain an epoch; batches/s, sequences/s and real tokens/s (start-up included), and time to first batch."""
    start, n_batches, sequences, tokens, first = time.perf_counter(), 0, 0, 0, 0.0
    for batch in batches:
        if not n_batches:
            first = time.perf_counter() - start
        n_batches += 1
        seqs, toks = count_tokens(batch)
        sequences, tokens = sequences + seqs, tokens + toks
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "batches/s": n_batches / seconds, "sequences/s": sequences / seconds,
            "tokens/s": tokens / seconds, "sequences": sequences, "tokens": tokens, "first": first}


def padding_overhead(loader) -> float:
    """Mean of (longest history * B) / real tokens over the epoch's batches."""
    ratios = [int(b.sparse["history"].lengths().max()) * b.size / int(b.sparse["history"].lengths().sum())
              for b in loader]
    return float(np.mean(ratios))


def report(name: str, result: dict[str, float], baseline: dict[str, float]) -> None:
    print(f"{name:<32} {result['seconds']:6.2f} s  {result['batches/s']:8.1f} batches/s  "
          f"{result['sequences/s']:10,.0f} seq/s  {result['tokens/s']:12,.0f} tok/s  "
          f"x{result['sequences/s'] / baseline['sequences/s']:.1f} vs naive  (first batch after {result['first']:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, help="dataset folder (default: generate one)")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--negatives", default="none", choices=["none", "uniform", "popularity", "in_batch"])
    parser.add_argument("--num-negatives", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dataset
        if folder is None:
            start = time.perf_counter()
            folder = generate(Path(tmp) / "bench", args.users, args.items)
            print(f"generated {args.users:,} users in {time.perf_counter() - start:.1f} s")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
              f"{torch.__version__}; batch {args.batch_size}, max_len {args.max_len}, negatives {args.negatives}")

        def dense(batch: tuple[torch.Tensor, ...]) -> tuple[int, int]:
            return len(batch[0]), int((batch[1] != 0).sum())

        def jagged(batch) -> tuple[int, int]:
            return batch.size, int(batch.sparse["history"].lengths().sum())

        baseline = measure(naive_batches(folder, args.batch_size, args.max_len, seed=0), dense)
        report("naive per-user Python loop", baseline, baseline)
        for workers in args.workers:
            config = LoaderConfig(batch_size=args.batch_size, max_len=args.max_len, num_workers=workers,
                                  negatives=args.negatives, num_negatives=args.num_negatives)
            result = measure(iter(build_loader(folder, config)), jagged)
            assert result["sequences"] == baseline["sequences"], "both loaders must see every training sequence"
            report(f"SequenceDataset, {workers} workers", result, baseline)
        for buckets in (1, 16):
            config = LoaderConfig(batch_size=args.batch_size, max_len=args.max_len, bucket_batches=buckets)
            print(f"padding overhead (pad to batch max) with bucket_batches={buckets:>2}: "
                  f"{padding_overhead(build_loader(folder, config)):.2f}x real tokens "
                  f"(naive, padded to max_len: {args.max_len * baseline['sequences'] / baseline['tokens']:.2f}x)")


if __name__ == "__main__":
    main()
