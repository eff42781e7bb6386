"""Accuracy / coverage trade-off of the re-rankers as their strength moves, on one trained run.

Evaluates the run with ``seqrec evaluate`` at every strength of the popularity penalty and of MMR (each writes
its own results file into the run folder) and prints NDCG@10 and coverage@10 as ratios against the plain ranking
(strength 0) measured in the same process, plus the smallest NDCG loss that buys +50% coverage@10. Writes
``tradeoff.json`` and ``tradeoff.png`` (NDCG@10 against coverage@10, one curve per re-ranker) into --output.

Example:
  python scripts/bench_rerank.py --run outputs/bench/ml1m/sasrec_ce/seed42 --output outputs/rerank-ml1m
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.cli import main as seqrec

STRENGTHS = {"popularity": "0,0.25,0.5,1,2", "mmr": "0,0.2,0.5,0.8"}
COLUMNS = ("ndcg@10", "hr@10", "coverage@10", "gini@10", "avg_pop@10", "ild@10", "novelty@10")


def measure(run: Path, split: str, kind: str, strength: float, candidates: int, reuse: bool) -> dict[str, float]:
    """One evaluation of ``run`` with the re-ranker ``kind`` at ``strength`` (``reuse``: read an existing file)."""
    path = run / f"eval_{split}_{kind}{strength:g}.json"
    if reuse and path.is_file():
        results = json.loads(path.read_text())
        if results["settings"].get("bias_candidates", candidates) == candidates:
            return {c: results[c] for c in COLUMNS}
    overrides = [f"eval.bias_rerank={kind}", f"eval.bias_strength={strength}", f"eval.bias_candidates={candidates}",
                 "eval.per_user=false"]
    if seqrec(["evaluate", str(run), "--split", split, "--overwrite", *overrides]) != 0:
        raise SystemExit(f"evaluation failed: {kind} {strength}")
    results = json.loads(path.read_text())
    return {c: results[c] for c in COLUMNS}


def plot(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    """NDCG@10 against coverage@10, one labelled curve per re-ranker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, points in curves.items():
        ax.plot([p["coverage@10"] for p in points], [p["ndcg@10"] for p in points], marker="o", label=kind)
        for p in points:
            ax.annotate(f"{p['strength']:g}", (p["coverage@10"], p["ndcg@10"]), fontsize=7)
    ax.set_xlabel("coverage@10")
    ax.set_ylabel("NDCG@10")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="trained run folder")
    parser.add_argument("--output", required=True, type=Path, help="folder for tradeoff.json and tradeoff.png")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--candidates", type=int, default=100, help="candidates re-ranked per user (default 100)")
    for kind, default in STRENGTHS.items():
        parser.add_argument(f"--{kind}", default=default, help=f"comma-separated strengths (default {default})")
    parser.add_argument("--reuse", action="store_true", help="read results files already in the run folder")
    args = parser.parse_args()
    curves: dict[str, list[dict[str, float]]] = {}
    for kind in STRENGTHS:
        strengths = [float(x) for x in getattr(args, kind).split(",")]
        curves[kind] = [
            {"strength": s, **measure(args.run, args.split, kind, s, args.candidates, args.reuse)} for s in strengths
        ]
    plain = curves["popularity"][0]
    print(f"plain ranking: NDCG@10 {plain['ndcg@10']:.4f}, coverage@10 {plain['coverage@10']:.4f}")
    print("| re-ranker | strength | NDCG@10 | vs plain | coverage@10 | vs plain | gini@10 | avg pop@10 | ILD@10 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, points in curves.items():
        for p in points:
            print(f"| {kind} | {p['strength']:g} | {p['ndcg@10']:.4f} | {p['ndcg@10'] / plain['ndcg@10']:.3f}x | "
                  f"{p['coverage@10']:.4f} | {p['coverage@10'] / plain['coverage@10']:.3f}x | {p['gini@10']:.4f} | "
                  f"{p['avg_pop@10']:.0f} | {p['ild@10']:.4f} |")
    target = [(kind, p) for kind, ps in curves.items() for p in ps if p["coverage@10"] >= 1.5 * plain["coverage@10"]]
    if target:
        kind, best = max(target, key=lambda kp: kp[1]["ndcg@10"])
        print(f"+50% coverage@10 at the least NDCG@10 loss: {kind} {best['strength']:g}: "
              f"NDCG {best['ndcg@10'] / plain['ndcg@10'] - 1:+.1%}, coverage {best['coverage@10'] / plain['coverage@10'] - 1:+.1%}")
    else:
        print("no setting reached +50% coverage@10")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "tradeoff.json").write_text(json.dumps(curves, indent=2) + "\n")
    plot(curves, args.output / "tradeoff.png")


if __name__ == "__main__":
    main()
