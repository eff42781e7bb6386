"""Cost of drift statistics (and of explanations) in serving: p50/p99 of `Recommender.recommend` with and without.

    python scripts/bench_drift.py --run outputs/<experiment>/<run_id>     # a run with an export/ folder
    python scripts/bench_drift.py                                          # trains and exports a small run first

The requests are users' histories from the run's dataset (k=10), answered one at a time (batch 1, what a lone
client sees) and in batches of 16 (what server-side batching hands the handler), by the exported model on one
intra-op thread. Each request is timed with the statistics on and off in alternating order, so both see the same
machine state; the ratio of the percentiles is the figure to read. ``--explain`` also times ``"explain": true``
(leave-one-out over the history) against a plain request.

Detection: PSI of held-out users of the run's dataset (not in the reference profile) and of the users of
``--shifted DATASET`` (another dataset over the same item ids, e.g. the same generator with another popularity
exponent). Without ``--run`` the script trains its own synthetic run (``seqrec synth --users 3000 --items 5000
--seed 1``, Zipf 0.9; ``--tiny``: the tests' tiny run) and makes the shifted datasets itself with ``--shift-zipf``
(default 0.3).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_serving import train_small_run  # noqa: E402  (scripts/ is this script's own folder)

from serving.drift import compare, format_report, replay  # noqa: E402
from serving.drift_cli import build_profile, dataset_of, history_requests, reference_users  # noqa: E402
from serving.service import Recommender  # noqa: E402


def paired(service: Recommender, batches: list[list], on, repeats: int) -> dict[str, np.ndarray]:
    """Seconds per `recommend` call of every batch with ``on`` attached and without, interleaved."""
    times: dict[str, list[float]] = {"with": [], "without": []}
    for rep in range(repeats):
        for i, batch in enumerate(batches):
            for mode in (("with", "without") if (i + rep) % 2 else ("without", "with")):
                service.drift = on if mode == "with" else None
                start = time.perf_counter()
                service.recommend(batch)
                times[mode].append(time.perf_counter() - start)
    service.drift = None
    return {k: np.asarray(v) for k, v in times.items()}


def report(name: str, times: dict[str, np.ndarray], first: str = "with", second: str = "without") -> None:
    a, b = times[first], times[second]
    p50a, p99a, p50b, p99b = (np.percentile(x, q) * 1e3 for x in (a, b) for q in (50, 99))
    print(f"{name}: {first} p50 {p50a:.3f} ms p99 {p99a:.3f} ms | {second} p50 {p50b:.3f} ms p99 {p99b:.3f} ms | "
          f"ratio p50 {p50a / p50b:.3f}x p99 {p99a / p99b:.3f}x ({len(a)} calls each)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="run folder with an export/ subfolder (default: train one)")
    parser.add_argument("--requests", type=int, default=400, help="distinct requests (default 400)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the requests (default 5)")
    parser.add_argument("--explain", action="store_true", help="also time explain=true against plain requests")
    parser.add_argument("--shifted", type=Path, help="dataset folder whose users' histories are a shifted log")
    parser.add_argument("--shift-zipf", type=float, nargs="+", default=[0.3], help="popularity exponents of the "
                        "shifted logs made when the script trains its own run (default 0.3; the run's is 0.9)")
    parser.add_argument("--tiny", action="store_true", help="train the tests' tiny run instead (600 users, 300 "
                        "items, seed 3, dim 16, 2 epochs: seconds)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run, shifted = args.run, [args.shifted] if args.shifted else []
    if run is None:
        root = Path(tempfile.mkdtemp(prefix="bench-drift-"))
        run = train_tiny_run(root) if args.tiny else train_small_run(root)
        subprocess.run([sys.executable, "-m", "trainer.cli", "export", str(run)], check=True, cwd=REPO)
        synth = TINY if args.tiny else SMALL
        shifted = shifted or [shifted_dataset(root, synth, zipf) for zipf in args.shift_zipf]
    export = run / "export"
    service = Recommender.load(export)
    service.warm_up(16)
    dataset = dataset_of(export)
    users = len(history_requests(dataset))
    sample = min(1000, users // 2)  # the rest are held out
    profile = build_profile(service, dataset, sample=sample)
    parsed = [service.parse(b) for b in history_requests(dataset)[: args.requests]]
    print(f"machine: {platform.processor() or platform.machine()}, 1 thread, {len(service.raw_ids)} items, "
          f"mean history {np.mean([len(r.items) for r in parsed]):.1f}")
    for size in (1, 16):
        batches = [parsed[i: i + size] for i in range(0, len(parsed), size)]
        report(f"batch {size:>2}", paired(service, batches, profile.stats(service), args.repeats))
    if args.explain:
        plain = parsed[:50]
        explained = [service.parse({"history": service.raw_ids[np.asarray(r.items) - 1].tolist(), "k": 10,
                                    "explain": True}) for r in plain]
        times = {"explain": [], "plain": []}
        for a, b in zip(explained, plain):
            for name, request in (("explain", a), ("plain", b)):
                start = time.perf_counter()
                service.recommend([request])
                times[name].append(time.perf_counter() - start)
        report("explain", {k: np.asarray(v) for k, v in times.items()}, "explain", "plain")
    held_out = np.setdiff1d(np.arange(users), reference_users(dataset, sample))
    logs = [("held-out users", history_requests(dataset, held_out[:2000]))]
    logs += [(f"shifted ({folder.name})", history_requests(folder)) for folder in shifted]
    for name, bodies in logs:
        stats = profile.stats(service)
        replay(service, bodies, stats)
        print(f"{name}:\n" + format_report(compare(profile, stats), profile.threshold, stats.requests))
    return 0


SMALL = ["--users", "3000", "--items", "5000", "--seed", "1"]  # = bench_serving.train_small_run's log
TINY = ["--users", "600", "--items", "300", "--categories", "10", "--seed", "3", "--mean-length", "12",
        "--max-length", "60"]  # = tests/conftest.py tiny_dataset


def train_tiny_run(root: Path) -> Path:
    """The tests' tiny dataset and run (tests/conftest.py): seconds on a CPU."""
    py = sys.executable
    subprocess.run([py, "-m", "trainer.cli", "synth", "--output", str(root / "raw"), *TINY], check=True, cwd=REPO)
    subprocess.run([py, "-m", "trainer.cli", "prepare", "--format", "synthetic", str(root / "raw"),
                    str(root / "ds")], check=True, cwd=REPO)
    subprocess.run([py, "-m", "trainer.train", f"data.path={root / 'ds'}", f"trainer.output_dir={root / 'out'}",
                    "trainer.run_id=tiny", "trainer.epochs=2", "model.dim=16", "data.max_len=20",
                    "data.batch_size=32", "model.encoder.dropout=0.0", "optim.warmup_steps=0",
                    "optim.schedule=constant", "trainer.progress=false", "trainer.test_at_end=false"],
                   check=True, cwd=REPO)
    return root / "out" / "default" / "tiny"


def shifted_dataset(root: Path, synth: list[str], zipf: float) -> Path:
    """The run's generator (same seed, so the same catalogue) with popularity exponent ``zipf``."""
    py = sys.executable
    raw, out = root / f"raw-zipf{zipf}", root / f"zipf{zipf}"
    subprocess.run([py, "-m", "trainer.cli", "synth", "--output", str(raw), *synth, "--zipf", str(zipf)],
                   check=True, cwd=REPO, capture_output=True)
    subprocess.run([py, "-m", "trainer.cli", "prepare", "--format", "synthetic", str(raw), str(out)], check=True,
                   cwd=REPO, capture_output=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
