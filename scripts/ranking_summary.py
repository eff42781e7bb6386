"""Mean ± 95% confidence interval of ranking runs' test metrics, per experiment (one run per seed).

    python scripts/ranking_summary.py outputs/dlrm_kuairand outputs/transact_kuairand outputs/transact_nomask_kuairand
    python scripts/ranking_summary.py outputs/*_synthetic --metrics auc_view,logloss_view

Reads ``<experiment>/<run>/metrics.json`` (the best-validation checkpoint's test metrics, as `seqrec train` writes
them) and prints one row per experiment: n runs and, per metric, the mean ± the half-width of the two-sided 95%
Student-t interval over the runs (no interval with one run). Metrics default to every ``auc_*`` and
``logloss_*`` key the runs share.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from scipy import stats


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95% t interval (NaN for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def runs_of(folder: Path) -> list[dict]:
    """Test metrics of every finished run in an experiment folder."""
    out = []
    for path in sorted(folder.glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        if "test" in metrics:
            out.append(metrics["test"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+", type=Path, help="experiment folders (outputs/<experiment>)")
    parser.add_argument("--metrics", default="", help="comma list of metric keys (default: auc_* and logloss_*)")
    args = parser.parse_args()
    table = {folder.name: runs_of(folder) for folder in args.experiments}
    table = {name: runs for name, runs in table.items() if runs}
    if not table:
        print("no finished runs (metrics.json with test metrics) in those folders", file=sys.stderr)
        return 2
    for name, runs in table.items():
        shared = set.intersection(*(set(run) for run in runs))
        keys = args.metrics.split(",") if args.metrics else sorted(
            (k for k in shared if k.startswith(("auc_", "logloss_"))), key=lambda k: (k.split("_", 1)[1], k))
        cells = []
        for key in keys:
            mean, half = mean_ci([float(run[key]) for run in runs])
            cells.append(f"{key} {mean:.4f}" + ("" if math.isnan(half) else f" ± {half:.4f}"))
        print(f"{name} (n={len(runs)}): " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
