"""Ranker serving latency end to end through TorchServe on loopback: 1 request x 100 candidates.

    python scripts/bench_ranking_serving.py --run outputs/transact_kuairand/seed1
    python scripts/bench_ranking_serving.py --run outputs/dlrm_kuairand/seed1 --clients 1,32 --requests 320

Exports the run (``seqrec export --archive``), starts a locked-down TorchServe (token auth on, one worker per
core), and for each concurrency level sends requests of a 50-event history (real ids and actions of the
dataset) with 100 candidates, after untimed warm-up requests at that level; p50 / p99 / requests per second.
The model-only latency of the same request (one thread) is printed first, from the export's metadata, as the
baseline the server overhead adds to.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_serving import _client  # noqa: E402  (one timed HTTP POST)


def bodies(export: Path, history: int, candidates: int, count: int = 64) -> list[bytes]:
    """Request bodies with random real item ids and action names."""
    ids = json.loads((export / "id_map.json").read_text())["raw_ids"]
    info = json.loads((export / "ranking.json").read_text())
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        events = [{"item": ids[i], "action": info["actions"][a]}
                  for i, a in zip(rng.integers(0, len(ids), history), rng.integers(0, len(info["actions"]), history))]
        out.append(json.dumps({"history": events, "candidates": [ids[i] for i in rng.integers(0, len(ids), candidates)],
                               "head": info["heads"][-1]}).encode())
    return out


def measure(url: str, key: str, requests: list[bytes], clients: int, count: int, seconds: float, warmup: int
            ) -> tuple[np.ndarray, float]:
    """Latencies (ms) of up to ``count`` requests sent by ``clients`` threads, and the wall time."""
    deadline, latencies = time.monotonic() + seconds, []
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(lambda b: _client(url, key, b, 30), requests[: max(warmup, clients)]))
        began = time.perf_counter()
        while len(latencies) < count and time.monotonic() < deadline:
            wave = [requests[(len(latencies) + i) % len(requests)] for i in range(clients)]
            latencies += list(pool.map(lambda b: _client(url, key, b, 30), wave))
    return np.asarray(latencies), time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="trained ranker run folder")
    parser.add_argument("--clients", default="1,32", help="comma list of concurrency levels")
    parser.add_argument("--requests", type=int, default=320, help="timed requests per level")
    parser.add_argument("--seconds", type=float, default=30.0, help="time cap per level")
    parser.add_argument("--warmup", type=int, default=32)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4, help="TorchServe batchSize")
    parser.add_argument("--max-batch-delay-ms", type=int, default=1)
    args = parser.parse_args()
    from serving.export import ExportConfig, export_run
    from serving.serve import ServerConfig, read_keys, start, stop
    from trainer.distributed import free_port

    work = Path(tempfile.mkdtemp(prefix="rank-bench-"))
    meta = export_run(ExportConfig(run=args.run, output=work / "export", evaluate=False, archive=True,
                                   batch_size=args.batch_size, max_batch_delay_ms=args.max_batch_delay_ms))
    export = Path(meta["output"])
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {meta['model']['name']} from "
          f"{args.run}; model only (1 thread): " + ", ".join(f"{k} {v:.2f} ms" for k, v in meta["latency_ms"].items()))
    cfg = ServerConfig(archive=Path(meta["archive"]), port=free_port(), management_port=free_port(),
                       metrics_port=free_port())
    requests = bodies(export, args.history, args.candidates)
    try:
        start(cfg, timeout_s=180)
        key, url = read_keys(cfg.folder)["inference"], f"{cfg.url}/predictions/{cfg.model_name}"
        print(f"TorchServe batchSize {args.batch_size}, maxBatchDelay {args.max_batch_delay_ms} ms; "
              f"{args.history}-event history x {args.candidates} candidates (ms)")
        print(f"{'clients':>8}{'requests':>10}{'p50':>9}{'p99':>9}{'req/s':>9}")
        for clients in (int(c) for c in args.clients.split(",")):
            ms, wall = measure(url, key, requests, clients, args.requests, args.seconds, args.warmup)
            print(f"{clients:>8}{len(ms):>10}{np.percentile(ms, 50):>9.2f}{np.percentile(ms, 99):>9.2f}"
                  f"{len(ms) / wall:>9.1f}")
    finally:
        stop(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
