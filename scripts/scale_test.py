"""Scale test: synth -> prepare -> 2-rank SASRec training (sharded 1M-row item table) -> full-ranking evaluation.

Every stage runs as its own process tree (the real ``seqrec`` commands and ``torchrun``), watched by a sampler
that reads the resident memory of every process in the tree from /proc twice a second. Reported per stage: wall
time, throughput (events/s, sequences/s), peak RSS (the largest sum over the tree and the largest single
process), disk used by what it wrote; for training also the RSS over time, which must stay flat (a leak shows as
growth between the second and the last quarter of the run). Evaluation ranks the whole catalogue for a random
sample of users (``--eval-users``), with the item-chunked top-k of `trainer.evaluate`.

The full size (10M users, ~300M events, 1M items) needs roughly 8 GB of disk (1M users wrote 332 MiB of raw log
and a 172 MiB dataset, plus prepare's temporary partitions) and is not part of the test suite;
``tests/integration/test_scale.py`` runs it at 100K users.

Examples:
  .venv/bin/python scripts/scale_test.py --users 100000 --steps 20 --eval-users 2000
  .venv/bin/python scripts/scale_test.py --users 1000000 --steps 200 --workdir outputs/scale-1m
  .venv/bin/python scripts/scale_test.py            (10M users; run it alone on the machine)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import trainer from this checkout
PAGE_KB = 1024


class TreeMemory:
    """Samples the RSS of a process and all its descendants (from /proc) until stopped."""

    def __init__(self, root_pid: int, interval_s: float = 0.5, log: Path | None = None, marker: str = "") -> None:
        self.root, self.interval = root_pid, interval_s
        self.series: list[tuple[float, int]] = []  # (seconds since start, total RSS bytes of the tree)
        self.log, self.marker = log, marker
        self.marked_at: float | None = None  # when ``marker`` first appeared in ``log`` (e.g. the first step)
        self.last_marked_at: float | None = None  # when it last appeared again (e.g. the last logged step)
        self._marks = 0
        self.peak_process = 0  # the largest RSS any single process of the tree reached (its VmHWM)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.perf_counter()

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_total(self) -> int:
        return max((rss for _, rss in self.series), default=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, hwm = _tree_rss(self.root)
            now = time.perf_counter() - self._start
            if rss:
                self.series.append((now, rss))
                self.peak_process = max(self.peak_process, hwm)
            if self.marker:
                self._mark(now)
            self._stop.wait(self.interval)


    def _mark(self, now: float) -> None:
        marks = self.log.read_text(errors="replace").count(self.marker)
        if marks > self._marks:
            self._marks, self.last_marked_at = marks, now
            if self.marked_at is None:
                self.marked_at = now

    def steady(self) -> list[tuple[float, int]]:
        """The samples between the first and the last appearance of the marker."""
        if self.marked_at is None:
            return []
        return [(t, rss) for t, rss in self.series if self.marked_at <= t <= self.last_marked_at]


def _status_kb(pid: int, *keys: str) -> list[int]:
    """Fields of /proc/<pid>/status in kB (0 when the process is gone)."""
    values = dict.fromkeys(keys, 0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in values:
                values[key] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return [values[k] for k in keys]


def _children() -> dict[int, list[int]]:
    """parent pid -> child pids, from every /proc/<pid>/stat."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _tree_rss(root: int) -> tuple[int, int]:
    """(sum of RSS, largest VmHWM) over ``root`` and its descendants, in bytes."""
    tree, stack, total, hwm = _children(), [root], 0, 0
    while stack:
        pid = stack.pop()
        rss, peak = _status_kb(pid, "VmRSS", "VmHWM")
        total, hwm = total + rss * PAGE_KB, max(hwm, peak * PAGE_KB)
        stack.extend(tree.get(pid, []))
    return total, hwm


def disk_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_stage(name: str, argv: list[str], log_path: Path, marker: str = "") -> dict[str, Any]:
    """Run one stage's command, sampling its process tree's memory; stop the whole test if it fails.

    ``marker``: text of the log lines that span the stage's steady state (training: the step lines); the memory
    series between the first and the last of them is also returned, for the flatness check.
    """
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(argv[:6])} ...", flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    with open(log_path, "w") as log, subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT) \
            as proc, TreeMemory(proc.pid, log=log_path, marker=marker) as memory:
        code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        tail = log_path.read_text()[-3000:]
        sys.exit(f"scale test: stage {name} failed (exit {code}); log {log_path}:\n{tail}")
    steady = memory.steady()
    return {"seconds": round(seconds, 2), "peak_rss_total_bytes": memory.peak_total,
            "peak_rss_process_bytes": memory.peak_process, "rss_series": memory.series, "steady_series": steady}


def flatness(series: list[tuple[float, int]]) -> dict[str, float]:
    """RSS growth from the median of the run's second quarter to the median of its last quarter."""
    if len(series) < 8:
        return {"samples": len(series), "growth_bytes": 0.0, "growth_ratio": 0.0}
    n = len(series)

    def median(part: list[tuple[float, int]]) -> float:
        values = sorted(rss for _, rss in part)
        return float(values[len(values) // 2])

    second, last = median(series[n // 4: n // 2]), median(series[3 * n // 4:])
    return {"samples": n, "growth_bytes": last - second, "growth_ratio": (last - second) / max(second, 1.0)}


def _seqrec(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer.cli", *args]


def _train_argv(args: argparse.Namespace, dataset: Path, out: Path) -> list[str]:
    """torchrun on ``--ranks`` local ranks, row-wise sharded item table, a bounded number of steps."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.ranks),
            "trainer/train.py", f"data.path={dataset}", f"trainer.output_dir={out}", "trainer.run_id=scale",
            f"trainer.max_steps={args.steps}", "trainer.epochs=1", "trainer.eval_every_epochs=0",
            "trainer.test_at_end=false", "trainer.sharding=row_wise", "trainer.progress=false",
            f"trainer.log_every={max(1, args.steps // 10)}", "model.objective.loss=sampled_softmax",
            f"data.num_negatives={args.negatives}", f"data.batch_size={args.batch_size}",
            f"data.max_len={args.max_len}", f"model.dim={args.dim}", "eval.per_user=false"]


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """The four stages in order (two with ``--data-only``); returns the report (also written to ``workdir/scale_report.json``)."""
    work = Path(args.workdir).resolve()
    raw, dataset, runs = work / "raw", work / "dataset", work / "runs"
    work.mkdir(parents=True, exist_ok=True)
    stages: dict[str, Any] = {}
    if not (raw / "synth.json").is_file():
        stages["synth"] = run_stage("synth", _seqrec("synth", "--output", str(raw), "--users", str(args.users),
                                                      "--items", str(args.items), "--mean-length",
                                                      str(args.mean_length), "--seed", "0"), work / "synth.log")
    if not (dataset / "manifest.json").is_file():
        stages["prepare"] = run_stage("prepare", _seqrec("prepare", "--format", "synthetic", str(raw), str(dataset)),
                                      work / "prepare.log")
    run_dir = runs / "default" / "scale"
    if args.data_only:
        return _report(args, work, raw, dataset, None, stages)
    shutil.rmtree(runs, ignore_errors=True)  # a fresh run each time (the data is reused)
    stages["train"] = run_stage("train", _train_argv(args, dataset, runs), work / "train.log", marker=" loss ")
    stages["evaluate"] = run_stage("evaluate", [sys.executable, str(Path(__file__).resolve()), "--evaluate-run",
                                                str(run_dir), "--eval-users", str(args.eval_users)],
                                   work / "evaluate.log")
    return _report(args, work, raw, dataset, run_dir, stages)


def _report(args: argparse.Namespace, work: Path, raw: Path, dataset: Path, run_dir: Path | None,
            stages: dict[str, Any]) -> dict[str, Any]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    events = int(manifest["counts"]["events_read"])
    for name, folder, per_s in (("synth", raw, events), ("prepare", dataset, events)):
        if name in stages:
            stages[name].update(disk_bytes=disk_bytes(folder), events_per_s=per_s / stages[name]["seconds"])
    report = {"users": manifest["counts"]["users"], "items": manifest["counts"]["items"], "events": events,
              "ranks": args.ranks, "machine": f"{os.cpu_count()} cores", "stages": stages}
    if run_dir is not None:
        _model_stages(stages, run_dir)
    (work / "scale_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _model_stages(stages: dict[str, Any], run_dir: Path) -> None:
    """Training and evaluation figures from what the run wrote (metrics.json, eval_sample.json)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluation = json.loads((run_dir / "eval_sample.json").read_text())
    stages["train"].update(disk_bytes=disk_bytes(run_dir), steps=metrics["steps"], rss_flatness=flatness(
        stages["train"]["steady_series"]), sequences_per_s=metrics["throughput"]["sequences_per_s"])
    stages["evaluate"].update(users=evaluation["users"], sequences_per_s=evaluation["users"] / evaluation["seconds"],
                              metrics={k: evaluation[k] for k in ("ndcg@10", "hr@10")})


def print_report(report: dict[str, Any]) -> None:
    """One line per stage, then the training RSS over time (ten points)."""
    gb = 2**30
    print(f"\n{report['users']:,} users, {report['items']:,} items, {report['events']:,} events, "
          f"{report['ranks']} ranks ({report['machine']})")
    print(f"{'stage':<9} {'wall s':>8} {'throughput':>22} {'peak RSS tree':>14} {'peak process':>13} {'disk':>10}")
    for name, s in report["stages"].items():
        rate = (f"{s['events_per_s'] / 1e6:.2f}M events/s" if "events_per_s" in s
                else f"{s.get('sequences_per_s', 0):,.0f} seq/s")
        print(f"{name:<9} {s['seconds']:>8.1f} {rate:>22} {s['peak_rss_total_bytes'] / gb:>11.2f} GB "
              f"{s['peak_rss_process_bytes'] / gb:>10.2f} GB {s.get('disk_bytes', 0) / 2**20:>7,.0f} MiB")
    if "train" not in report["stages"]:
        return
    train = report["stages"]["train"]
    series = train["steady_series"]
    points = [series[int(i * (len(series) - 1) / 9)] for i in range(10)] if series else []
    print("training RSS from the first to the last logged step (s: GB): " + ", ".join(f"{t:.0f}: {rss / gb:.2f}" for t, rss in points))
    flat = train["rss_flatness"]
    print(f"training RSS growth, 2nd to last quarter: {flat['growth_bytes'] / 2**20:+.0f} MiB "
          f"({100 * flat['growth_ratio']:+.1f}%) over {flat['samples']} samples")


def evaluate_sample(run_dir: Path, users: int) -> None:
    """(Child process) full-ranking test metrics of ``run_dir``'s newest checkpoint for ``users`` random users."""
    import torch
    from omegaconf import OmegaConf

    from trainer import checkpoint
    from trainer.config import from_dict
    from trainer.data.loader import LoaderConfig, build_loader
    from trainer.data.schema import read_manifest
    from trainer.distributed import init_distributed, shard_model, shutdown_distributed
    from trainer.evaluate import evaluate_model
    from trainer.model_factory import build_model

    cfg = from_dict(OmegaConf.load(run_dir / "config.yaml"))
    env = init_distributed()
    try:
        manifest = read_manifest(cfg.data.path)
        built = build_model(cfg.model, manifest.num_items, cfg.data.max_len, torch.device("meta"), cfg.data.path)
        model = shard_model(built, env, cfg.optim)
        checkpoint.load(checkpoint.latest_checkpoint(run_dir), model, None)
        batch = cfg.data.eval_batch_size
        loader = build_loader(cfg.data.path, LoaderConfig(batch_size=batch, max_len=cfg.data.max_len, kind="last",
                                                          split="test", shuffle=True, seed=7))
        start = time.perf_counter()
        metrics = evaluate_model(model, _Sample(loader, -(-users // batch)), manifest, cfg.eval, env, progress=True)
    finally:
        shutdown_distributed()
    metrics["seconds"] = time.perf_counter() - start
    (run_dir / "eval_sample.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k in ("users", "ndcg@10", "hr@10", "seconds")}))


class _Sample:
    """The first ``batches`` batches of a shuffled loader: a random user sample, with the loader's dataset."""

    def __init__(self, loader: Any, batches: int) -> None:
        self.loader, self.batches, self.dataset = loader, batches, loader.dataset

    def __iter__(self) -> Any:
        import itertools

        return itertools.islice(iter(self.loader), self.batches)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run every stage, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000_000, help="synthetic users (default 10M)")
    parser.add_argument("--items", type=int, default=1_000_000, help="catalogue size (default 1M)")
    parser.add_argument("--mean-length", type=float, default=30.0, help="mean events per user (default 30)")
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--ranks", type=int, default=2, help="training ranks (default 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="sequences per batch per rank (default 128)")
    parser.add_argument("--max-len", type=int, default=50, help="history length (default 50)")
    parser.add_argument("--dim", type=int, default=64, help="embedding width (default 64)")
    parser.add_argument("--negatives", type=int, default=8,
                        help="popularity negatives per sequence for the sampled softmax (default 8)")
    parser.add_argument("--eval-users", type=int, default=10_000, help="users ranked against the whole catalogue")
    parser.add_argument("--workdir", default="outputs/scale", help="where data, runs, logs and the report go; "
                        "existing raw/ and dataset/ are reused (default outputs/scale)")
    parser.add_argument("--data-only", action="store_true", help="stop after synth and prepare")
    parser.add_argument("--evaluate-run", type=Path, help=argparse.SUPPRESS)  # the evaluation stage's child
    args = parser.parse_args(argv)
    if args.evaluate_run is not None:
        evaluate_sample(args.evaluate_run, args.eval_users)
        return 0
    report = run_all(args)
    print_report(report)
    print(f"report: {Path(args.workdir).resolve() / 'scale_report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
