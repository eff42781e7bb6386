"""Compare evaluated runs: ``seqrec compare RUN_A RUN_B [...] --output DIR``.

Each argument is a run (or baseline) folder that ``seqrec evaluate`` wrote results into, or ``NAME=RUN1,RUN2``
to aggregate several seeds of one configuration under one name. The first argument is the reference: every
other one is tested against it, user by user (paired t-test, Wilcoxon signed-rank, bootstrap CI of the mean
difference; Holm's correction over all metrics and comparisons). Runs evaluated on another dataset, split, split
policy, protocol or ranking are refused with the setting that differs. Writes ``report.md`` (+ ``summary.json``)
and PNG plots: metrics with 95% CIs, NDCG@K by history length, the popularity-bias curve, coverage, and the
accuracy/coverage trade-off.

Examples (after `seqrec benchmark configs/benchmark/ml1m_beauty.yaml`):
  seqrec compare outputs/bench/ml1m/popularity outputs/bench/ml1m/ease --output outputs/compare/ml1m
  seqrec compare pop=outputs/bench/ml1m/popularity \\
      ce=outputs/bench/ml1m/sasrec_ce/seed42,outputs/bench/ml1m/sasrec_ce/seed43 \\
      --metrics ndcg@10 hr@10 novelty --output outputs/compare/ml1m-seeds
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainer.errors import ConfigError
from trainer.evaluation.results import IDENTITY_KEYS, read_results

DEFAULT_METRICS = ("ndcg@10", "hr@10", "mrr", "novelty", "serendipity")


@dataclasses.dataclass
class Group:
    """One configuration: its runs (seeds), their results files and seed-averaged per-user values."""

    name: str
    runs: list[Path]
    results: list[dict[str, Any]]
    users: np.ndarray
    per_user: dict[str, np.ndarray]  # metric -> (seeds, users), users in `users` order


def parse_groups(specs: list[str]) -> list[tuple[str, list[Path]]]:
    """``RUN`` or ``NAME=RUN1,RUN2,...`` -> (name, runs); names must be unique."""
    groups: list[tuple[str, list[Path]]] = []
    for spec in specs:
        name, _, paths = spec.rpartition("=") if "=" in spec else ("", "", spec)
        runs = [Path(p) for p in paths.split(",") if p]
        if not runs:
            raise ConfigError(f"{spec!r}: no run folder given")
        groups.append((name or runs[0].name, runs))
    names = [n for n, _ in groups]
    if len(set(names)) != len(names):
        raise ConfigError(f"two runs share the name {sorted({n for n in names if names.count(n) > 1})}; use NAME=RUN")
    return groups


def _per_user_table(run: Path, name: str) -> pa.Table:
    files = sorted(run.glob(f"per_user_{name}.rank*.parquet"))
    if not files:
        raise ConfigError(f"{run}: no per_user_{name}.rank*.parquet (evaluate with eval.per_user=true)")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return table.take(pa.array(np.argsort(table.column("user_idx").to_numpy(), kind="stable")))


def load_group(name: str, runs: list[Path], results_name: str, metrics: list[str]) -> Group:
    """Read every run's results and per-user values; the seeds must cover the same users."""
    results, values = [], {m: [] for m in metrics}
    users = None
    for run in runs:
        results.append(read_results(run / f"eval_{results_name}.json"))
        table = _per_user_table(run, results_name)
        missing = [m for m in metrics if m not in table.column_names]
        if missing:
            raise ConfigError(f"{run}: per-user files have no {', '.join(missing)} (columns: {table.column_names})")
        run_users = table.column("user_idx").to_numpy()
        if users is not None and not np.array_equal(users, run_users):
            raise ConfigError(f"{run}: evaluated on other users than {runs[0]}")
        users = run_users
        for m in metrics:
            values[m].append(table.column(m).to_numpy().astype(np.float64))
    return Group(name, runs, results, users, {m: np.stack(v) for m, v in values.items()})


def check_comparable(groups: list[Group]) -> None:
    """Refuse runs evaluated differently, naming the setting, the two values and the two runs."""
    ref, ref_run = groups[0].results[0], groups[0].runs[0]
    for group in groups:
        for run, res in zip(group.runs, group.results):
            for key in IDENTITY_KEYS:
                if res[key] != ref[key]:
                    raise ConfigError(
                        f"cannot compare {run} ({key}={res[key]}) with {ref_run} ({key}={ref[key]}): "
                        f"evaluate both on the same {key}"
                    )
            if not np.array_equal(group.users, groups[0].users):
                raise ConfigError(f"cannot compare {run} with {ref_run}: different users were evaluated")


def add_arguments(parser: Any) -> None:
    """``seqrec compare`` arguments."""
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run/baseline folder, or NAME=RUN1,RUN2 for seeds")
    parser.add_argument("--output", required=True, help="folder for report.md, summary.json and the plots")
    parser.add_argument(
        "--name", default="test", help="which results: eval_<NAME>.json (default: test; e.g. test_none, valid)"
    )
    parser.add_argument(
        "--metrics", nargs="+", default=list(DEFAULT_METRICS), help="per-user metrics to test (default: %(default)s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")


def run(args: Any) -> int:
    """Load, check, test and write the report (into a temporary folder renamed at the end)."""
    from trainer.data.schema import atomic_output_dir
    from trainer.evaluation.report import write_report

    specs = parse_groups(args.runs)
    if len(specs) < 2 and len(specs[0][1]) < 2:
        raise ConfigError("compare needs at least two runs")
    groups = [load_group(name, runs, args.name, list(args.metrics)) for name, runs in specs]
    check_comparable(groups)
    with atomic_output_dir(args.output, overwrite=args.overwrite) as tmp:
        summary = write_report(groups, list(args.metrics), tmp)
    print(json.dumps(summary["tests"], indent=2))
    print(f"report written to {Path(args.output) / 'report.md'}")
    return 0
