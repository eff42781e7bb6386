"""Step cost of every registered sequence model on real MovieLens-1M batches, as a ratio to SASRec's, in one process.

What is timed: the model's own training step (``forward`` + ``backward``, full-softmax CE, no optimizer) and its
query (``encode`` in eval mode, no grad) on the same batches: the first ``--batches`` causal training batches and
last-item validation batches of a dataset folder made by ``seqrec prepare --format sasrec
../shared/data/sasrec-ml-1m/ml-1m.txt data/ml1m`` (random users, max_len 200, batch 128 / 256). Models are built
unsharded at ``--dim`` with their registered defaults; calls are interleaved model by model per batch so load on
a shared machine hits all of them alike. Prints ms per step and the ratio to ``sasrec`` (the baseline).

Example:
  .venv/bin/python scripts/bench_zoo.py --data data/ml1m --batches 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from modules import registry
from modules.sequence import SequenceModelConfig
from trainer.data.loader import LoaderConfig, build_loader
from trainer.data.schema import read_manifest


def batches(folder: str, kind: str, split: str, size: int, count: int, timestamps: bool) -> list:
    loader = build_loader(folder, LoaderConfig(batch_size=size, max_len=200, kind=kind, split=split, shuffle=True,
                                               bucket_batches=1, timestamps=timestamps))
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == count:
            return out
    return out


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/ml1m", help="dataset folder (seqrec prepare --format sasrec ...)")
    parser.add_argument("--batches", type=int, default=3, help="timed batches of each kind (after one warm-up)")
    parser.add_argument("--dim", type=int, default=64, help="model width")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num_items = read_manifest(args.data).num_items
    names = ["sasrec"] + [n for n in registry.names()  # the sequence models (encoder + objective), not towers
                          if n != "sasrec" and issubclass(registry.get(n).config, SequenceModelConfig)]
    torch.manual_seed(0)
    models = {n: registry.build(registry.get(n).config(dim=args.dim), num_items=num_items, max_len=200)
              for n in names}
    train = batches(args.data, "causal", "train", 128, args.batches + 1, True)
    evals = batches(args.data, "last", "valid", 256, args.batches + 1, True)
    cost: dict[str, dict[str, list[float]]] = {n: {"train": [], "encode": []} for n in names}
    for i in tqdm(range(args.batches + 1), desc="batches"):
        for name, model in models.items():
            step = timed(lambda m=model, b=train[i]: m.train()(b)[0].backward())
            with torch.no_grad():
                query = timed(lambda m=model, b=evals[i]: m.eval().encode(b))
            if i:  # the first batch warms up
                cost[name]["train"].append(step)
                cost[name]["encode"].append(query)
    base = {k: statistics.median(v) for k, v in cost["sasrec"].items()}
    print(f"{'model':<10} {'train ms':>9} {'x sasrec':>9} {'encode ms':>10} {'x sasrec':>9}")
    for name in names:
        t, e = (statistics.median(cost[name][k]) for k in ("train", "encode"))
        print(f"{name:<10} {t:9.0f} {t / base['train']:9.2f} {e:10.0f} {e / base['encode']:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
