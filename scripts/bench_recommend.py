"""Offline recommendations (`seqrec recommend`) against TorchServe and the evaluation path, same artefact.

    python scripts/bench_recommend.py --run outputs/<experiment>/<run_id>     # ML-1M run with export/ + .mar
    python scripts/bench_recommend.py --synthetic-users 1000000 --work /path/to/scratch

``--run``: top-K (``--k``, default 100) for every user of the run's dataset, full histories, seen items excluded:
``recommend`` with 1 process x 2 threads and 2 processes x 1 thread; the evaluation path (the trained fp32 model,
encode + `full_ranking` per batch, the test split's inputs, one process); a TorchServe serving the same export's
``.mar`` (2 workers x 1 thread, token auth on) answering one user per request, first from one client (one by
one), then from ``--clients`` concurrent clients so the server batches them (batched HTTP), each on the first
``--http-users`` users. Prints users/s and the ratio of each path to ``recommend``'s best, measured in this process.

``--synthetic-users N``: synth -> prepare -> a 30-step training run -> INT8 export, then ``seqrec recommend`` on
all N users with 2 processes; wall time and peak RSS (the whole process tree, sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def offline(run: Path, out: Path, k: int, procs: int, threads: int) -> float:
    """users/s of ``recommend`` over every user of the run's dataset."""
    from serving.recommend import RecommendConfig, recommend

    result = recommend(RecommendConfig(source=run, output=out, k=k, procs=procs, threads=threads, overwrite=True,
                                       progress=False))
    return result["users"] / result["seconds"]


def evaluation_path(run: Path, k: int, threads: int) -> float:
    """users/s of the evaluation path's top-K (trained fp32 model, encode + full_ranking, seen filtered)."""
    import torch

    from serving.export import load_trained
    from trainer.data.loader import LoaderConfig, build_loader
    from trainer.distributed import DistEnv
    from trainer.evaluate import SeenIndex, item_table
    from trainer.evaluation.ranking import full_ranking

    torch.set_num_threads(threads)
    trained = load_trained(run)
    folder = trained.cfg.data.path
    loader = build_loader(folder, LoaderConfig(kind="last", split="test", batch_size=256,
                                               max_len=trained.cfg.data.max_len, shuffle=False))
    seen = SeenIndex(folder, "test")
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
    started, users = time.perf_counter(), 0
    with torch.inference_mode():
        items = item_table(trained.model, trained.model.num_items, env)
        for batch in loader:
            full_ranking(trained.model.encode(batch).float(), items, k, None, seen.gather(batch.user_idx))
            users += len(batch.user_idx)
    return users / (time.perf_counter() - started)


def http_bodies(run: Path, users: int, k: int) -> list[bytes]:
    """Request bodies of the first ``users`` users: full history as raw item ids."""
    import pyarrow.parquet as pq

    from serving.recommend import dataset_of, find_artefact

    folder = dataset_of(find_artefact(run), None)
    raw = pq.read_table(folder / "items.parquet", columns=["raw_id"]).column("raw_id").to_pylist()
    rows = pq.read_table(folder / "sequences.parquet", columns=["items"]).slice(0, users).column("items").to_pylist()
    return [json.dumps({"history": [raw[i - 1] for i in r], "k": k}).encode() for r in rows]


def _post(url: str, key: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                              "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
        assert answer["items"], answer


def torchserve(run: Path, bodies: list[bytes], clients: int) -> dict[str, float]:
    """users/s through a real TorchServe: one client sending one user at a time, then ``clients`` at once."""
    from serving.recommend import find_artefact
    from serving.serve import ServerConfig, read_keys, start, stop
    from trainer.distributed import free_port

    artefact = find_artefact(run)
    archive = next(artefact.glob("*.mar"))
    ports = [free_port() for _ in range(5)]
    cfg = ServerConfig(archive=archive, state_dir=artefact / "bench-ts", port=ports[0], management_port=ports[1],
                       metrics_port=ports[2], grpc_port=ports[3], grpc_management_port=ports[4], workers=2)
    try:
        start(cfg, timeout_s=180)
        key, url = read_keys(cfg.folder)["inference"], f"{cfg.url}/predictions/{cfg.model_name}"
        for body in bodies[:20]:  # warm-up
            _post(url, key, body)
        started = time.perf_counter()
        for body in bodies:
            _post(url, key, body)
        one = len(bodies) / (time.perf_counter() - started)
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda b: _post(url, key, b), bodies))
        batched = len(bodies) / (time.perf_counter() - started)
    finally:
        stop(cfg)
    return {"one_by_one": one, "batched": batched}


def ml1m(args: argparse.Namespace) -> None:
    work = Path(args.work or args.run / "bench-recommend")
    work.mkdir(parents=True, exist_ok=True)
    paths = {
        "recommend 1 proc x 2 threads": offline(args.run, work / "a.parquet", args.k, 1, 2),
        "recommend 2 procs x 1 thread": offline(args.run, work / "b.parquet", args.k, 2, 1),
    }
    try:
        paths["evaluation path (fp32 eager, 2 threads)"] = evaluation_path(args.run, args.k, 2)
    except ConfigError as exc:  # e.g. a run folder written before a config change: say so, measure the rest
        print(f"evaluation path skipped: {exc}")
    bodies = http_bodies(args.run, args.http_users, args.k)
    served = torchserve(args.run, bodies, args.clients)
    paths["TorchServe one by one (2 workers)"] = served["one_by_one"]
    paths[f"TorchServe batched, {args.clients} clients (2 workers)"] = served["batched"]
    best = max(paths["recommend 1 proc x 2 threads"], paths["recommend 2 procs x 1 thread"])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; K={args.k}")
    for name, rate in paths.items():
        print(f"  {name:<48} {rate:>9.0f} users/s   recommend is {best / rate:.2f}x")


def _tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in tree]
        tree.update(children)
        frontier = children
    return sum(rss.get(p, 0) for p in tree) / 2**20


def synthetic(args: argparse.Namespace) -> None:
    work = Path(args.work or "bench-recommend-synth")
    py, cli = sys.executable, [sys.executable, "-m", "trainer.cli"]
    raw, ds, out = work / "raw", work / "ds", work / "out"
    if not (ds / "manifest.json").is_file():
        subprocess.run([*cli, "synth", "--output", str(raw), "--users", str(args.synthetic_users), "--no-progress",
                        "--overwrite"], check=True, cwd=REPO)
        subprocess.run([*cli, "prepare", "--format", "synthetic", str(raw), str(ds), "--overwrite"], check=True,
                       cwd=REPO)
    run = out / "default" / "bench"
    if not (run / "export" / "model.pt").is_file():
        subprocess.run([py, "-m", "trainer.train", f"data.path={ds}", f"trainer.output_dir={out}",
                        "trainer.run_id=bench", "trainer.max_steps=30", "trainer.progress=false",
                        "trainer.test_at_end=false", "trainer.eval_every_epochs=0"], check=True, cwd=REPO)
        subprocess.run([*cli, "export", str(run), "--no-eval", "--overwrite"], check=True, cwd=REPO)
    cmd = [*cli, "recommend", str(run), "-o", str(work / "recs.parquet"), "--k", str(args.k), "--procs", "2",
           "--threads", "1", "--overwrite", "--no-progress"]
    started = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=REPO)
    peak = [0.0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss_mb(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    seconds = time.perf_counter() - started
    sampler.join()
    if code:
        raise SystemExit(code)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"  {' '.join(cmd[2:])}")
    print(f"  {args.synthetic_users:,} users, K={args.k}: wall {seconds:.1f} s "
          f"({args.synthetic_users / seconds:.0f} users/s incl. start-up), peak RSS of the process tree {peak[0]:.0f} MB")


from trainer.errors import ConfigError  # noqa: E402  (after the sys.path line above)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="run folder with export/ (model.pt + .mar)")
    parser.add_argument("--synthetic-users", type=int, help="benchmark this many synthetic users instead")
    parser.add_argument("--work", type=Path, help="scratch folder (default: next to the run / ./bench-recommend-synth)")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--http-users", type=int, default=600, help="users sent through TorchServe")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients of the batched HTTP path")
    args = parser.parse_args()
    if args.synthetic_users:
        synthetic(args)
    elif args.run:
        ml1m(args)
    else:
        parser.error("pass --run RUN or --synthetic-users N")
    return 0


if __name__ == "__main__":
    sys.exit(main())
