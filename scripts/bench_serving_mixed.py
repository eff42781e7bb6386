"""Mixed good/bad load and a bounded soak against a real TorchServe on loopback.

    python scripts/bench_serving_mixed.py --run outputs/<experiment>/<run_id>
    python scripts/bench_serving_mixed.py            # trains a small synthetic run first (dim 64, max_len 200)

1. Mixed load: ``--requests`` requests from ``--clients`` concurrent clients, ``--malformed`` of them drawn from the
   bad-request corpus (tests/corpus/requests.json) and the rest valid (history length 50, k 10), shuffled so bad
   and valid requests share server-side batches. Reports valid requests that failed (target 0), malformed ones
   that did not get a 4xx (target 0), and p50/p99 against an all-valid baseline of the same size and
   concurrency run in the same process.
2. Soak: open-loop load (each request has a scheduled send time; latency counts from it, so queueing shows) at
   increasing ``--rates`` for ``--soak-seconds`` each, stopping at the first rate whose p99 reaches ``--p99-ms``;
   reports each rate's achieved throughput, p50/p99 and errors, and the highest rate that held.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Client:
    """One keep-alive HTTP connection per thread to the server's inference API."""

    def __init__(self, port: int, key: str, model: str) -> None:
        self.port, self.key, self.path = port, key, f"/predictions/{model}"
        self.local = threading.local()

    def post(self, body: bytes) -> tuple[int, float]:
        """(status, latency ms) of one request; a connection error counts as status 0."""
        start = time.perf_counter()
        for attempt in range(2):  # a keep-alive connection the server closed is reopened once
            conn = getattr(self.local, "conn", None) or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.local.conn = conn
            try:
                conn.request("POST", self.path, body=body, headers={
                    "Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
                response = conn.getresponse()
                response.read()
                return response.status, 1000.0 * (time.perf_counter() - start)
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt:
                    return 0, 1000.0 * (time.perf_counter() - start)
        return 0, 0.0


def valid_bodies(ids: list[str], count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [json.dumps({"history": [ids[i] for i in rng.integers(0, len(ids), 50)], "k": 10}).encode()
            for _ in range(count)]


def mixed_load(client: Client, ids: list[str], requests: int, malformed: float, clients: int) -> dict:
    """Valid failures, malformed non-4xx and latencies of a shuffled mix (and of an all-valid baseline)."""
    from tests.corpus import request_bodies

    bad, _ = request_bodies(ids)
    rng = random.Random(0)
    n_bad = round(requests * malformed)
    jobs = [(True, body) for body in valid_bodies(ids, requests - n_bad)]
    jobs += [(False, bad[i % len(bad)][1]) for i in range(n_bad)]
    rng.shuffle(jobs)
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client.post, valid_bodies(ids, 2 * clients, seed=1)))  # warm-up, not timed
        baseline = list(pool.map(client.post, valid_bodies(ids, requests, seed=2)))
        results = list(pool.map(lambda job: client.post(job[1]), jobs))
    valid = [r for (ok, _), r in zip(jobs, results) if ok]
    bad_results = [r for (ok, _), r in zip(jobs, results) if not ok]
    return {
        "valid_failed": sum(code != 200 for code, _ in valid),
        "malformed_not_4xx": sum(not 400 <= code < 500 for code, _ in bad_results),
        "valid": len(valid), "malformed": len(bad_results),
        "mixed_valid_ms": _percentiles([ms for _, ms in valid]),
        "baseline_ms": _percentiles([ms for _, ms in baseline]),
        "baseline_failed": sum(code != 200 for code, _ in baseline),
    }


def soak(client: Client, ids: list[str], rate: float, seconds: float, workers: int) -> dict:
    """Open-loop load at ``rate`` req/s for ``seconds``: latency from each request's scheduled send time."""
    bodies = valid_bodies(ids, 256, seed=3)
    total = int(rate * seconds)
    began = time.perf_counter() + 0.2

    def one(i: int) -> tuple[int, float]:
        due = began + i / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        code, _ = client.post(bodies[i % len(bodies)])
        return code, 1000.0 * (time.perf_counter() - due)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(total)))
    wall = time.perf_counter() - began
    return {"rate": rate, "sent": total, "achieved": total / wall, "errors": sum(c != 200 for c, _ in results),
            **_percentiles([ms for _, ms in results])}


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms) if ms else np.zeros(1)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


def serve(run: Path, work: Path, batch_size: int, delay_ms: int, workers: int | None) -> tuple[object, Path]:
    from serving.export import ExportConfig, export_run
    from serving.serve import ServerConfig, start
    from trainer.distributed import free_port

    meta = export_run(ExportConfig(run=run, output=work / "export", evaluate=False, archive=True,
                                   batch_size=batch_size, max_batch_delay_ms=delay_ms))
    cfg = ServerConfig(archive=Path(meta["archive"]), port=free_port(), management_port=free_port(),
                       metrics_port=free_port(), workers=workers)
    start(cfg, timeout_s=180)
    return cfg, Path(meta["output"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="trained run folder (default: train a small synthetic one)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--malformed", type=float, default=0.3, help="fraction of malformed requests")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rates", default="50,100,200,300,400,600", help="soak rates in req/s, ascending")
    parser.add_argument("--soak-seconds", type=float, default=20.0)
    parser.add_argument("--p99-ms", type=float, default=50.0, help="soak stops at the first rate reaching this p99")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batch-delay", type=int, default=5, help="TorchServe maxBatchDelay (ms)")
    parser.add_argument("--workers", type=int, default=None, help="TorchServe workers (default: CPU cores)")
    args = parser.parse_args()
    from scripts.bench_serving import train_small_run
    from serving.serve import read_keys, stop

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    with tempfile.TemporaryDirectory(prefix="bsm-", dir="/tmp") as tmp:
        work = Path(tmp)
        run = args.run or train_small_run(work)
        cfg, export = serve(run, work, args.batch_size, args.max_batch_delay, args.workers)
        try:
            ids = json.loads((export / "id_map.json").read_text())["raw_ids"]
            client = Client(cfg.port, read_keys(cfg.folder)["inference"], cfg.model_name)
            mixed = mixed_load(client, ids, args.requests, args.malformed, args.clients)
            print(f"\nmixed load: {mixed['valid']} valid + {mixed['malformed']} malformed, {args.clients} clients, "
                  f"batchSize {args.batch_size}, maxBatchDelay {args.max_batch_delay} ms")
            print(f"  valid failed: {mixed['valid_failed']}   malformed without a 4xx: {mixed['malformed_not_4xx']}")
            m, b = mixed["mixed_valid_ms"], mixed["baseline_ms"]
            print(f"  valid p50/p99 {m['p50']:.1f}/{m['p99']:.1f} ms; all-valid baseline {b['p50']:.1f}/"
                  f"{b['p99']:.1f} ms ({b['p99'] and m['p99'] / b['p99']:.2f}x p99), baseline failed "
                  f"{mixed['baseline_failed']}")
            print(f"\nsoak, open loop, {args.soak_seconds:.0f} s per rate, p99 limit {args.p99_ms:.0f} ms")
            print(f"{'rate':>8}{'achieved':>10}{'p50':>8}{'p99':>8}{'errors':>8}")
            held = None
            for rate in (float(r) for r in args.rates.split(",")):
                s = soak(client, ids, rate, args.soak_seconds, workers=max(args.clients, 32))
                print(f"{rate:>8.0f}{s['achieved']:>10.1f}{s['p50']:>8.1f}{s['p99']:>8.1f}{s['errors']:>8}")
                if s["p99"] >= args.p99_ms or s["errors"]:
                    break
                held = s
            if held:
                print(f"highest rate holding p99 < {args.p99_ms:.0f} ms: {held['rate']:.0f} req/s "
                      f"(p50 {held['p50']:.1f} ms, p99 {held['p99']:.1f} ms)")
            else:
                print(f"no rate held p99 < {args.p99_ms:.0f} ms")
        finally:
            stop(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
