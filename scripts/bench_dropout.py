"""Dropout on CPU: `torch.nn.functional.dropout` against `modules.dropout.dropout`, alone and inside attention.

Shapes default to one random ML-1M training batch (128 users, max_len 200, width 64): the activations dropout
sees after every sublayer (``B x L x D``), and the attention weights (``B x L x L``) that SASRec's attention
dropout masks. The attention rows compare SDPA with ``dropout_p`` (on CPU it falls back to its math path and
draws a Bernoulli number per weight) against `modules.attention.attention`, which runs the same math with
`modules.dropout` masks; forward + backward. Every case is timed in this process, the two versions
interleaved (median of ``--repeats``); the ratio is the figure to read.

    python scripts/bench_dropout.py
    python scripts/bench_dropout.py --batch 32 --length 50     # Beauty-sized histories
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.attention import attention
from modules.dropout import dropout


def interleaved_medians(
    calls: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Median seconds per call of each callable, calls alternating A B, B A, ... after one warm-up round
    (``clock``: wall time by default; `time.process_time` counts this process's CPU time, which other jobs on a
    shared machine disturb less)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls.items())
    for i in range(repeats + 1):
        for name, fn in order if i % 2 == 0 else order[::-1]:
            start = clock()
            fn()
            if i:
                times[name].append(clock() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="sequences B")
    parser.add_argument("--length", type=int, default=200, help="padded length L")
    parser.add_argument("--dim", type=int, default=64, help="width D")
    parser.add_argument("--p", type=float, default=0.1, help="dropout probability")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b, length, dim, p = args.batch, args.length, args.dim, args.p
    activations = torch.randn(b, length, dim)
    weights = torch.randn(b, length, length)
    q, k, v = (torch.randn(b, 1, length, dim).requires_grad_() for _ in range(3))

    def sdpa_step() -> None:
        F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True).sum().backward()

    def ours_step() -> None:
        attention(q, k, v, causal=True, dropout_p=p).sum().backward()

    cases = {
        f"activations {b}x{length}x{dim}": (lambda: F.dropout(activations, p, True), lambda: dropout(activations, p)),
        f"weights {b}x{length}x{length}": (lambda: F.dropout(weights, p, True), lambda: dropout(weights, p)),
        f"attention fwd+bwd {b}x{length}": (sdpa_step, ours_step),
    }
    print(f"dropout p={p}; {platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"{'case':<30} {'torch ms':>9} {'ours ms':>9} {'speedup':>8}")
    for name, (theirs, ours) in cases.items():
        medians = interleaved_medians({"torch": theirs, "ours": ours}, args.repeats)
        print(f"{name:<30} {1000 * medians['torch']:9.2f} {1000 * medians['ours']:9.2f} "
              f"{medians['torch'] / medians['ours']:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
