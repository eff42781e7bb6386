"""Serving latency: model-only (fp32 vs INT8 TorchScript) and end to end through TorchServe on loopback.

    python scripts/bench_serving.py --run outputs/<experiment>/<run_id>
    python scripts/bench_serving.py            # trains a small synthetic run first (dim 64, max_len 200)

Model-only: p50/p99 of one call (one intra-op thread, calls interleaved across the variants) at batch 1 and 32,
history length 50/200/1000 (histories longer than the model's max_len are cut to it inside the model), for fp32,
INT8 tables only, INT8 tables + INT8-stored linears and positions (fp32 compute), and INT8 tables + dynamic INT8
linears.
End to end: an archive of the INT8 model served by a locked-down TorchServe (token auth on), 1/8/32 concurrent
clients sending history-length-200 requests after --warmup untimed ones, each level bounded by --requests and
--seconds; ``--batching`` repeats this for several server-side batching settings (``batchSize:maxBatchDelay``
pairs, one server each).
``--linears``: one linear layer, fp32 against dynamic INT8 (what ``--dense auto`` chooses between), on the rows
of a batch of 32 histories of 200 at several widths: whether INT8 compute can pay at all depends on the width.
Prints ratios against fp32 measured in the same process, and the machine.
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
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train_small_run(root: Path) -> Path:
    """A synthetic dataset and a one-epoch dim-64, max_len-200 run under ``root``."""
    py = sys.executable
    subprocess.run([py, "-m", "trainer.cli", "synth", "--output", str(root / "raw"), "--users", "3000",
                    "--items", "5000", "--seed", "1"], check=True, cwd=REPO)
    subprocess.run([py, "-m", "trainer.cli", "prepare", "--format", "synthetic", str(root / "raw"),
                    str(root / "ds")], check=True, cwd=REPO)
    subprocess.run([py, "-m", "trainer.train", f"data.path={root / 'ds'}", f"trainer.output_dir={root / 'out'}",
                    "trainer.run_id=bench", "trainer.epochs=1", "model.dim=64", "data.max_len=200",
                    "trainer.progress=false", "trainer.test_at_end=false"], check=True, cwd=REPO)
    return root / "out" / "default" / "bench"


def model_only(run: Path, repeats: int) -> None:
    from serving import quantize
    from serving.export import build_variant, load_trained, paired_latency
    from serving.inference import script

    trained = load_trained(run)
    n = trained.model.num_items
    variants = {
        "fp32": script(build_variant(trained.model, False, [])[0]),
        "int8 tables": script(build_variant(trained.model, True, [])[0]),
        "int8 tables+stored": script(build_variant(trained.model, True, [], int8_storage=True)[0]),
        "int8 tables+linears": script(build_variant(trained.model, True, list(quantize.DENSE_GROUPS))[0]),
    }
    print(f"\nmodel only: {n} items, dim {trained.model.config.dim}, max_len {trained.cfg.data.max_len} (ms)")
    print(f"{'variant':<22}{'batch':>6}{'hist':>6}{'p50':>9}{'p99':>9}{'x fp32 p50':>12}")
    for batch in (1, 32):
        for length in (50, 200, 1000):
            # Calls interleaved across the variants (one thread, as a serving worker): block-by-block timing
            # on a shared machine mostly measures drift.
            timed = paired_latency(variants, n, batch, length, repeats=repeats if batch == 1 else max(5, repeats // 4))
            base = timed["fp32"]["p50_ms"]
            for name, t in timed.items():
                print(f"{name:<22}{batch:>6}{length:>6}{t['p50_ms']:>9.2f}{t['p99_ms']:>9.2f}{base / t['p50_ms']:>12.2f}")


def _client(url: str, key: str, body: bytes, timeout: float) -> float:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                                 "Authorization": f"Bearer {key}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
    return 1000.0 * (time.perf_counter() - start)


def end_to_end(run: Path, work: Path, requests: int, seconds: float, batching: list[tuple[int, int]],
               warmup: int, jvm_options: list[str]) -> None:
    from serving.archive import build_archive
    from serving.export import ExportConfig, export_run

    meta = export_run(ExportConfig(run=run, output=work / "export", evaluate=False))
    for batch_size, delay_ms in batching:
        archive = build_archive(meta["output"], work / f"mar-{batch_size}-{delay_ms}", batch_size, delay_ms)
        for options in jvm_options:
            serve_and_measure(archive, Path(meta["output"]), requests, seconds, batch_size, delay_ms, warmup, options)


def serve_and_measure(archive: Path, export: Path, requests: int, seconds: float, batch_size: int,
                      delay_ms: int, warmup: int, jvm_options: str) -> None:
    from serving.serve import ServerConfig, read_keys, start, stop
    from trainer.distributed import free_port

    ids = json.loads((export / "id_map.json").read_text())["raw_ids"]
    cfg = ServerConfig(archive=archive, port=free_port(), management_port=free_port(), metrics_port=free_port(),
                       jvm_options=jvm_options)
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"history": [ids[i] for i in rng.integers(0, len(ids), 200)], "k": 10}).encode()
              for _ in range(64)]
    try:
        start(cfg, timeout_s=180)
        key, url = read_keys(cfg.folder)["inference"], f"{cfg.url}/predictions/{cfg.model_name}"
        shown = cfg.jvm_options or "TorchServe's own"
        print(f"\nend to end via TorchServe (batchSize {batch_size}, maxBatchDelay {delay_ms} ms, "
              f"{os.cpu_count()} workers, JVM options {shown!r}), history length 200 (ms)")
        print(f"{'clients':>8}{'requests':>10}{'p50':>9}{'p99':>9}{'req/s':>9}")
        for clients in (1, 8, 32):
            deadline, latencies = time.monotonic() + seconds, []
            with ThreadPoolExecutor(max_workers=clients) as pool:
                # Warm-up at this concurrency, not timed: connections, the JVM's JIT, every worker's first calls.
                list(pool.map(lambda b: _client(url, key, b, 30), bodies[: max(warmup, clients)]))
                began = time.perf_counter()
                while len(latencies) < requests and time.monotonic() < deadline:
                    wave = [bodies[(len(latencies) + i) % len(bodies)] for i in range(clients)]
                    latencies += list(pool.map(lambda b: _client(url, key, b, 30), wave))
            wall = time.perf_counter() - began
            ms = np.asarray(latencies)
            print(f"{clients:>8}{len(ms):>10}{np.percentile(ms, 50):>9.2f}{np.percentile(ms, 99):>9.2f}"
                  f"{len(ms) / wall:>9.1f}")
    finally:
        stop(cfg)


def linears(widths: list[int], rows: int, repeats: int) -> None:
    """p50 ms of ``(rows, w) @ (w, out)`` for fp32 `nn.Linear` and its dynamic INT8 version (1 thread, interleaved)."""
    import copy
    import functools
    import warnings

    import torch

    from serving import quantize

    print(f"\none linear layer on {rows} rows, fp32 vs dynamic INT8 (1 thread, interleaved; p50 ms)")
    print(f"{'in x out':>12} {'fp32':>8} {'int8':>8} {'int8 speed':>11}")
    for width in widths:
        for out in (width, 3 * width):  # a square layer (FFN, out-projection) and the fused Q/K/V projection
            layer = torch.nn.Sequential(torch.nn.Linear(width, out)).eval()
            x = torch.randn(rows, width)
            with warnings.catch_warnings():  # torch.ao's eager quantization is deprecated (torchao)
                warnings.simplefilter("ignore")
                dense = torch.ao.quantization.quantize_dynamic(copy.deepcopy(layer), {torch.nn.Linear}, torch.qint8)
            calls = {"fp32": functools.partial(layer, x), "int8": functools.partial(dense, x)}
            times = quantize.interleaved_ms(calls, repeats)
            fp32, int8 = (float(np.median(times[name])) for name in ("fp32", "int8"))
            print(f"{width:>5} x {out:<5} {fp32:8.3f} {int8:8.3f} {fp32 / int8:10.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="trained run folder (default: train a small one)")
    parser.add_argument("--repeats", type=int, default=40, help="model-only calls per measurement")
    parser.add_argument("--requests", type=int, default=320, help="end-to-end requests per concurrency level")
    parser.add_argument("--seconds", type=float, default=20.0, help="end-to-end time cap per concurrency level")
    parser.add_argument("--batching", default="16:1", help="comma list of TorchServe batchSize:maxBatchDelay(ms)")
    parser.add_argument("--warmup", type=int, default=32,
                        help="untimed end-to-end requests before each concurrency level")
    parser.add_argument("--jvm-options", action="append", default=None, metavar="OPTS",
                        help="Java options for TorchServe's frontend (repeat to compare; '' = TorchServe's own; "
                             "default: seqrec serve's)")
    parser.add_argument("--skip-e2e", action="store_true", help="model-only figures only")
    parser.add_argument("--skip-model", action="store_true", help="end-to-end figures only")
    parser.add_argument("--linears", default="", metavar="WIDTHS",
                        help="comma list of widths: time one fp32 vs dynamic-INT8 linear at each, then stop")
    args = parser.parse_args()
    try:
        batching = [(int(b), int(d)) for b, d in (pair.split(":") for pair in args.batching.split(","))]
    except ValueError:
        parser.error(f"--batching: expected pairs like 8:2,32:5, got {args.batching!r}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    if args.linears:
        linears([int(w) for w in args.linears.split(",")], 32 * 200, args.repeats)
        return 0
    from serving.serve import DEFAULT_JVM_OPTIONS

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        run = args.run or train_small_run(Path(tmp))
        if not args.skip_model:
            model_only(run, args.repeats)
        if not args.skip_e2e:
            end_to_end(run, Path(tmp), args.requests, args.seconds, batching, args.warmup,
                       args.jvm_options or [DEFAULT_JVM_OPTIONS])
    return 0


if __name__ == "__main__":
    sys.exit(main())
