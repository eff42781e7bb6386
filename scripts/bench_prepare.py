"""Benchmark `seqrec prepare`: events/s and peak memory, against raw pyarrow read throughput of the same input.

Each prepare runs in its own child process, so its peak RSS (``ru_maxrss``) is its own. The baseline, measured in
this process on the same file, is how fast pyarrow alone reads the events (CSV for ML-1M, Parquet for the
synthetic log): the ratio says what the whole pipeline costs relative to just parsing the input.

Inputs:
  * ``../shared/data/sasrec-ml-1m/ml-1m.txt`` (999,611 events), format ``sasrec``;
  * a synthetic log of ``--users`` users (about ``--mean-length`` events each): by default written by
    `trainer.data.synth` (users contiguous, time-ordered), or with ``--synthetic numpy`` a plain numpy log in
    global time order (users interleaved, the harder case for sorting), read with format ``events``.

Example (quick run):  .venv/bin/python scripts/bench_prepare.py --users 100000
Full run:             .venv/bin/python scripts/bench_prepare.py            (1M users, ~30M events)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import trainer from this checkout
ML1M = REPO.parent / "shared" / "data" / "sasrec-ml-1m" / "ml-1m.txt"

CHILD = """
import json, resource, sys, time
from trainer.data.prepare import PrepareConfig, prepare
args = json.loads(sys.argv[1])
start = time.perf_counter()
manifest = prepare(PrepareConfig(**args))
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "events": manifest.counts["events_read"],
                  "users": manifest.counts["users"], "items": manifest.counts["items"]}))
"""


def run_prepare(config: dict) -> dict:
    """Run prepare in a fresh child process; its own wall time and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config)], capture_output=True, text=True, env=env,
                          cwd=REPO)
    if done.returncode:
        sys.exit(f"prepare failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def csv_baseline(path: Path) -> tuple[int, float]:
    """Events and seconds for pyarrow to parse the whole space-separated file."""
    start = time.perf_counter()
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                           parse_options=pacsv.ParseOptions(delimiter=" "))
    return table.num_rows, time.perf_counter() - start


def parquet_baseline(path: Path) -> tuple[int, float]:
    start = time.perf_counter()
    rows = sum(batch.num_rows for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 20))
    return rows, time.perf_counter() - start


def make_synth(folder: Path, users: int, mean_length: float, items: int) -> Path:
    """A `seqrec synth` raw log folder."""
    from trainer.data.synth import SynthConfig, generate

    generate(SynthConfig(users=users, items=items, mean_length=mean_length), folder, progress=False)
    return folder


def make_numpy_log(folder: Path, users: int, mean_length: float, items: int, seed: int = 0) -> Path:
    """A Parquet event log in global time order: Zipf items, geometric lengths, string ids."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lengths = np.maximum(1, rng.geometric(1 / mean_length, users))
    n = int(lengths.sum())
    user = np.repeat(np.arange(users), lengths)
    item = (rng.zipf(1.2, n) - 1) % items
    ts = rng.integers(1_500_000_000, 1_600_000_000, n)
    order = np.argsort(ts, kind="stable")
    with pq.ParquetWriter(folder / "events.parquet", pa.schema(
            [("user", pa.string()), ("item", pa.string()), ("timestamp", pa.int64())])) as writer:
        for start in range(0, n, 1 << 22):
            part = order[start : start + (1 << 22)]
            writer.write_table(pa.table({
                "user": pa.array(np.char.add("u", user[part].astype(str))),
                "item": pa.array(np.char.add("i", item[part].astype(str))),
                "timestamp": pa.array(ts[part]),
            }))
    return folder / "events.parquet"


def report(name: str, result: dict, baseline: tuple[int, float]) -> dict:
    rate = result["events"] / result["seconds"]
    base_rate = baseline[0] / baseline[1]
    print(f"{name}: {result['events']:,} events -> {result['users']:,} users, {result['items']:,} items in "
          f"{result['seconds']:.2f} s = {rate / 1e6:.2f} M events/s, peak RSS {result['peak_mb']:.0f} MB; "
          f"baseline (pyarrow read only) {base_rate / 1e6:.2f} M events/s; ratio prepare/baseline "
          f"{rate / base_rate:.2f}")
    return {"name": name, **result, "events_per_s": rate, "baseline_events_per_s": base_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000, help="users in the synthetic log")
    parser.add_argument("--mean-length", type=float, default=30.0, help="mean events per synthetic user")
    parser.add_argument("--items", type=int, default=200_000, help="items in the synthetic log")
    parser.add_argument("--synthetic", choices=("synth", "numpy"), default="synth",
                        help="synth: trainer.data.synth (grouped by user); numpy: interleaved, in time order")
    parser.add_argument("--spill-threshold", type=int, default=None, help="prepare's spill threshold (events)")
    parser.add_argument("--partitions", type=int, default=None, help="prepare's partitions when spilling")
    parser.add_argument("--skip-ml1m", action="store_true", help="only the synthetic log")
    parser.add_argument("--work-dir", type=Path, default=None, help="where inputs and outputs go (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    scale = {k: v for k, v in (("spill_threshold", args.spill_threshold), ("partitions", args.partitions)) if v}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, pyarrow {pa.__version__}")
    results = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        work = Path(work)
        if not args.skip_ml1m and not ML1M.is_file():
            print(f"skipping ML-1M: {ML1M} not found")
        elif not args.skip_ml1m:
            baseline = csv_baseline(ML1M)
            result = run_prepare({"format": "sasrec", "input": str(ML1M), "output": str(work / "ml1m"), **scale})
            results.append(report("sasrec-ml-1m", result, baseline))
        start = time.perf_counter()
        if args.synthetic == "synth":
            source = make_synth(work / "synth-log", args.users, args.mean_length, args.items)
            fmt, events = "synthetic", source / "events.parquet"
        else:
            events = source = make_numpy_log(work / "numpy-log", args.users, args.mean_length, args.items)
            fmt = "events"
        print(f"generated the {args.synthetic} log in {time.perf_counter() - start:.1f} s")
        baseline = parquet_baseline(events)
        extra = {"short_users": "drop"} if fmt == "events" else {}
        result = run_prepare({"format": fmt, "input": str(source), "output": str(work / "synth-ds"), **extra, **scale})
        results.append(report(f"{args.synthetic}-{args.users}-users", result, baseline))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
