"""Benchmark full-ranking evaluation: chunked top-k + counted target ranks vs. a naive full sort.

Two cases with random D=64 embeddings and random seen lists:

* ``ml1m``: 6,040 users x 3,416 items (MovieLens-1M sized);
* ``1m``:   10,000 users x 1,000,000 items.

Ours = `full_ranking`: top-k ids (for coverage) and the exact rank of the held-out item (for HR/NDCG/MRR) from one
chunked pass, users in batches. Baseline = what many public implementations do: one full (users, N + 1) score matrix, seen items masked,
`argsort` of every row, top-k and the target's position read from the sorted order. Both run in this process on the
same inputs and their results are compared (ranks can differ by one where another item's score is within float32
rounding of the target's: a full-width matmul and a chunked one round differently). For the 1M case the baseline's full matrix would need
users x 1M x (4 + 8) bytes (120 GB for 10,000 users), so it is timed on a slice of users and scaled linearly; the
output says so.

Usage::

    python scripts/bench_eval.py                      # both cases, GPU when present
    python scripts/bench_eval.py --case 1m --users 1000 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.evaluation.ranking import full_ranking

CASES = {"ml1m": (6040, 3416), "1m": (10_000, 1_000_000)}


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator stats on GPU, sampled RSS on CPU (Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_bytes = device, 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._rss() - self._start)
            time.sleep(0.002)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            self._start = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._start
        else:
            self._stop.set()
            self._thread.join()


def measure(device: torch.device, fn: Callable[[], object]) -> tuple[float, int, object]:
    """(seconds, peak bytes, result) of one call."""
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, mem.peak_bytes, result


def make_inputs(
    users: int, items: int, dim: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random queries/items, 20..300 seen items per user (about MovieLens-1M's spread) and one unseen target."""
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randn(users, dim, generator=gen)
    item_emb = torch.randn(items + 1, dim, generator=gen)
    lengths = torch.randint(20, 301, (users,), generator=gen).clamp(max=items - 1)
    seen = torch.randint(1, items + 1, (int(lengths.sum()),), generator=gen)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    targets = torch.randint(1, items + 1, (users,), generator=gen)
    # Keep the target out of the seen list so both methods agree on what "rankable" means.
    rows = torch.repeat_interleave(torch.arange(users), lengths)
    seen = torch.where(seen == targets[rows], seen % items + 1, seen)
    tensors = {"queries": queries, "item_emb": item_emb, "seen": seen, "offsets": offsets, "targets": targets}
    return {name: t.to(device) for name, t in tensors.items()}


def slice_batch(data: dict[str, torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
    """Users lo..hi-1 with their jagged seen lists re-based."""
    offsets = data["offsets"][lo : hi + 1]
    return {
        "queries": data["queries"][lo:hi],
        "seen": data["seen"][int(offsets[0]) : int(offsets[-1])],
        "offsets": offsets - offsets[0],
        "targets": data["targets"][lo:hi],
    }


def ours(
    data: dict[str, torch.Tensor], users: int, k: int, batch: int, chunk: int
) -> tuple[torch.Tensor, ...]:
    ids, ranks = [], []
    for lo in range(0, users, batch):
        b = slice_batch(data, lo, min(lo + batch, users))
        one_each = torch.arange(b["targets"].numel() + 1, device=b["targets"].device)
        result = full_ranking(
            b["queries"], data["item_emb"], k, (b["targets"], one_each), (b["seen"], b["offsets"]), chunk
        )
        ids.append(result.ids)
        ranks.append(result.ranks.rank)
    return torch.cat(ids), torch.cat(ranks)


def naive(data: dict[str, torch.Tensor], users: int, k: int) -> tuple[torch.Tensor, ...]:
    """Full score matrix for all users, seen masked, argsort of every row."""
    b = slice_batch(data, 0, users)
    scores = b["queries"] @ data["item_emb"].T
    scores[:, 0] = float("-inf")
    rows = torch.repeat_interleave(torch.arange(users, device=scores.device), b["offsets"].diff())
    scores[rows, b["seen"]] = float("-inf")
    order = torch.argsort(scores, dim=1, descending=True)
    ranks = (order == b["targets"].unsqueeze(1)).int().argmax(dim=1)
    return order[:, :k], ranks


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def run_case(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    users, items = CASES[name]
    users = args.users or users
    data = make_inputs(users, items, args.dim, device)
    ours(data, min(users, args.batch), args.k, args.batch, args.chunk)  # warm-up (kernels, allocator)
    t_ours, m_ours, (ids, ranks) = measure(device, lambda: ours(data, users, args.k, args.batch, args.chunk))
    full_bytes = users * (items + 1) * (4 + 8)  # fp32 scores + int64 argsort indices
    base_users = (
        users
        if full_bytes <= args.baseline_mem_gb * 2**30
        else max(1, int(args.baseline_mem_gb * 2**30 // (12 * (items + 1))))
    )
    naive(data, min(base_users, 64), args.k)  # warm-up
    t_base, m_base, (base_ids, base_ranks) = measure(device, lambda: naive(data, base_users, args.k))
    scaled = t_base * users / base_users
    return {
        "case": name,
        "users": users,
        "items": items,
        "dim": args.dim,
        "k": args.k,
        "device": machine(device),
        "ours_s": round(t_ours, 3),
        "ours_peak_mib": round(m_ours / 2**20, 1),
        "baseline_users_timed": base_users,
        "baseline_s": round(scaled, 3),
        "baseline_s_is_extrapolated": base_users < users,
        "baseline_peak_mib": round(m_base / 2**20, 1),
        "speedup": round(scaled / t_ours, 2),
        "topk_ids_agree": float((ids[:base_users] == base_ids).float().mean()),
        "ranks_agree": float((ranks[:base_users] == base_ranks).float().mean()),
        "ranks_max_abs_diff": int((ranks[:base_users] - base_ranks).abs().max()),
    }


def _exec_with_fixed_mmap_threshold() -> None:
    """Restart once with glibc's mmap threshold pinned, so freed large tensors leave RSS and the sampled CPU
    peak measures each phase (by default glibc raises the threshold after a free and keeps the memory)."""
    if sys.platform == "linux" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> int:
    _exec_with_fixed_mmap_threshold()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument(
        "--users", type=int, default=0, help="override the case's user count (e.g. on a small CPU)"
    )
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1024, help="users scored per call")
    parser.add_argument("--chunk", type=int, default=65536, help="items scored per matmul")
    parser.add_argument(
        "--baseline-mem-gb", type=float, default=4.0, help="cap on the naive baseline's matrices"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    results = []
    for name in CASES if args.case == "all" else [args.case]:
        with torch.no_grad():
            result = run_case(name, args, device)
        results.append(result)
        note = (
            f" (timed on {result['baseline_users_timed']} users, scaled)"
            if result["baseline_s_is_extrapolated"]
            else ""
        )
        print(
            f"{name}: {result['users']} users x {result['items']} items, D={args.dim}, k={args.k} on {result['device']}\n"
            f"  ours     {result['ours_s']:8.3f} s  peak {result['ours_peak_mib']:9.1f} MiB\n"
            f"  baseline {result['baseline_s']:8.3f} s  peak {result['baseline_peak_mib']:9.1f} MiB{note}\n"
            f"  speedup  {result['speedup']:.2f}x; top-k ids agree {result['topk_ids_agree']:.4f}, "
            f"ranks agree {result['ranks_agree']:.4f} (max |diff| {result['ranks_max_abs_diff']})",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
