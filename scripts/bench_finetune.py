"""Fine-tune vs retrain on a temporal split of a real MovieLens log: NDCG@10 on the next period and wall time.

The log is cut at four global times (quantiles of its timestamps, ``--cuts``): ``t0 < t1 < t2 < t3``.

* v1 = the events before t1 (`seqrec prepare`, time split: validation [t0, t1)); a base model is trained on it:
  "last night's model".
* v2 = v1 + every later event (`seqrec prepare --append-to`, so item indices are kept and new items added), time
  split with validation [t2, t3) and test = everything from t3 on: the *next period*.
* fine-tune: the base model loaded into v2's larger catalogue (`trainer.init_from`, `trainer.growth`), a few
  epochs at a lower learning rate; retrain: the same model from scratch on v2 for the full budget (the baseline);
  stale: the base model grown into v2 and not trained (zero learning rates, one epoch); finetune-features: the
  fine-tune with new items' rows started from old items of the same genres (`trainer.init_new_items=features`).

All runs are timed in this process; each reports test NDCG@10 of its best-validation checkpoint on v2's test
period. Prints one line per run and the fine-tune/retrain ratios.

    python scripts/bench_finetune.py --work /tmp/finetune               # movielens-1m-partial, defaults
    python scripts/bench_finetune.py --work /tmp/ft --base-epochs 4 --retrain-epochs 4 --finetune-epochs 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import load_config
from trainer.data.append import AppendConfig, append
from trainer.data.prepare import PrepareConfig, prepare
from trainer.data.readers import open_reader
from trainer.data.readers.base import RawLog
from trainer.train import run_training

REPO = Path(__file__).resolve().parents[1]
RECIPE = ["experiment=sasrec_ml1m", "trainer.progress=false", "trainer.early_stopping_patience=0",
          "trainer.keep_checkpoints=1"]


def split_log(source: Path, cuts: tuple[float, ...]) -> tuple[RawLog, RawLog, tuple[int, ...]]:
    """The log before t1 and the log from t1 on (in memory), and the cut times."""
    raw = open_reader("movielens", source)
    table = pa.Table.from_batches(list(raw.events()))
    ts = table["timestamp"].to_numpy()
    times = tuple(int(np.quantile(ts, q)) for q in cuts)
    early = pa.array(ts < times[1])

    def part(mask: pa.Array) -> RawLog:
        events = table.filter(mask)
        return RawLog(raw.format, raw.files, lambda: iter(events.to_batches(max_chunksize=1 << 16)),
                      raw.item_features, raw.user_features)

    return part(early), part(pa.compute.invert(early)), times


def train(name: str, work: Path, dataset: Path, *overrides: str) -> dict:
    """One timed training run; its test metrics come from its best-validation checkpoint."""
    cfg = load_config([*RECIPE, f"data.path={dataset}", f"trainer.output_dir={work / 'runs'}",
                       f"trainer.run_id={name}", *overrides])
    start = time.perf_counter()
    result = run_training(cfg)
    seconds = time.perf_counter() - start
    test = result.get("test", {})
    row = {"run": name, "seconds": round(seconds, 1), "epochs": result["epochs"], "steps": result["steps"],
           "valid_ndcg@10": result.get("valid", {}).get("ndcg@10"), "test_ndcg@10": test.get("ndcg@10"),
           "test_hr@10": test.get("hr@10"), "run_dir": result["run_dir"]}
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, default=REPO.parent / "shared" / "data" / "movielens-1m-partial",
                        help="MovieLens folder (ratings with timestamps)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the dataset versions and runs")
    parser.add_argument("--cuts", type=float, nargs=4, default=(0.7, 0.8, 0.85, 0.9), metavar="Q",
                        help="timestamp quantiles t0 (v1 validation), t1 (end of v1), t2 (v2 validation), t3 "
                             "(v2 test: the next period)")
    parser.add_argument("--base-epochs", type=int, default=16)
    parser.add_argument("--retrain-epochs", type=int, default=16)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=0.0005, help="dense LR of the fine-tune")
    parser.add_argument("--finetune-sparse-lr", type=float, default=0.05, help="table LR of the fine-tune")
    args = parser.parse_args()
    early, late, (t0, t1, t2, t3) = split_log(args.log, tuple(args.cuts))
    v1, v2 = args.work / "v1", args.work / "v2"
    prepare(PrepareConfig(format="movielens", input=args.log, output=v1, split="time", valid_cut=t0, test_cut=t1,
                          short_users="drop", overwrite=True), early)
    append(AppendConfig(parent=v1, format="movielens", input=args.log, output=v2, valid_cut=t2, test_cut=t3,
                        overwrite=True), late)
    print(f"machine: {platform.processor() or platform.machine()}, cuts t0={t0} t1={t1} t2={t2} t3={t3}",
          flush=True)
    base = train("base", args.work, v1, f"trainer.epochs={args.base_epochs}", "trainer.test_at_end=false")
    every = f"trainer.eval_every_epochs={max(1, args.retrain_epochs // 4)}"
    retrain = train("retrain", args.work, v2, f"trainer.epochs={args.retrain_epochs}", every)
    tune = ["trainer.eval_every_epochs=1", f"trainer.init_from={base['run_dir']}", "optim.warmup_steps=0"]
    finetune = train("finetune", args.work, v2, *tune, f"trainer.epochs={args.finetune_epochs}",
                     f"optim.lr={args.finetune_lr}", f"optim.sparse_lr={args.finetune_sparse_lr}")
    stale = train("stale", args.work, v2, *tune, "trainer.epochs=1", "optim.lr=0.0", "optim.sparse_lr=0.0")
    featured = train("finetune-features", args.work, v2, *tune, f"trainer.epochs={args.finetune_epochs}",
                     f"optim.lr={args.finetune_lr}", f"optim.sparse_lr={args.finetune_sparse_lr}",
                     "trainer.init_new_items=features")
    for row in (finetune, stale, featured):
        ratio = (row["test_ndcg@10"] or float("nan")) / retrain["test_ndcg@10"]
        print(f"{row['run']} / retrain: test NDCG@10 {ratio:.3f}x, wall time {row['seconds'] / retrain['seconds']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
