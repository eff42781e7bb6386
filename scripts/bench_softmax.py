"""Full-softmax cross entropy, forward + backward: the plain form against `modules.losses.chunked_softmax_loss`.

The plain form materialises the ``(T, N)`` logits and walks over them several times (log-softmax, its gradient,
the NLL's zero-filled gradient); the chunked form keeps one block of ``chunk`` rows at a time and recomputes it in
backward. Shapes default to one ML-1M training batch (128 users, ~15.7k real targets, 3,416 items, width 48).
Both are timed in this process (median of ``--repeats``); the ratio is the figure to read. Also checks that both
give the same loss and gradients.

    python scripts/bench_softmax.py                       # ML-1M batch
    python scripts/bench_softmax.py --items 12101 --targets 16000   # Beauty-sized catalogue
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.losses import chunked_softmax_loss


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=15661, help="rows T (targets in the batch)")
    parser.add_argument("--items", type=int, default=3416, help="classes N (catalogue size)")
    parser.add_argument("--dim", type=int, default=48, help="width D")
    parser.add_argument("--chunks", default="256,512,1024,2048", help="comma list of chunk sizes to time")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(args.targets, args.dim, generator=gen).requires_grad_()
    classes = (0.1 * torch.randn(args.items, args.dim, generator=gen)).requires_grad_()
    target = torch.randint(0, args.items, (args.targets,), generator=gen)

    def run(chunk: int) -> tuple[torch.Tensor, ...]:
        query.grad = classes.grad = None
        if chunk:
            loss = chunked_softmax_loss(query, classes, target, chunk)
        else:
            loss = F.cross_entropy(query @ classes.T, target)
        loss.backward()
        return loss.detach(), query.grad.clone(), classes.grad.clone()

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
          f"T={args.targets} N={args.items} D={args.dim}; load average {os.getloadavg()[0]:.2f}")
    reference = run(0)
    base = median_seconds(lambda: run(0), args.repeats)
    print(f"{'form':<14}{'ms':>9}{'x plain':>9}{'max |diff|':>12}")
    print(f"{'plain':<14}{1000 * base:9.1f}{1.0:9.2f}{0.0:12.1e}")
    for chunk in (int(c) for c in args.chunks.split(",") if c):
        got = run(chunk)
        diff = max(float((a - b).abs().max()) for a, b in zip(got, reference))
        seconds = median_seconds(lambda c=chunk: run(c), args.repeats)
        print(f"{f'chunk {chunk}':<14}{1000 * seconds:9.1f}{base / seconds:9.2f}{diff:12.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
