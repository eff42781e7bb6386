"""The comparison report of ``seqrec compare``: ``report.md``, ``summary.json`` and PNG plots (matplotlib, Agg).

Plots: ``metrics.png`` (each tested metric with its 95% CI), ``ndcg_by_history.png`` (NDCG@K by history-length
bucket), ``popularity_curve.png`` (share of recommendations per item-popularity decile, against the catalogue
and the targets), ``coverage.png`` (coverage@10) and ``tradeoff.png`` (NDCG@10 against coverage@10).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer.evaluation.beyond import length_bucket_names
from trainer.evaluation.results import IDENTITY_KEYS
from trainer.evaluation.significance import bootstrap_ci, holm, paired_test, seed_interval


def _seed_mean(group: Any, key: str) -> float:
    values = [r[key] for r in group.results if isinstance(r.get(key), (int, float))]
    return float(np.mean(values)) if values else float("nan")


def group_summary(group: Any, metrics: list[str]) -> dict[str, Any]:
    """Per metric: mean over users (seed-averaged), its 95% CI (over seeds, or over users with one seed)."""
    out: dict[str, Any] = {"runs": [str(r) for r in group.runs], "seeds": len(group.runs)}
    for m in metrics:
        per_seed = group.per_user[m].mean(axis=1)
        mean, low, high = seed_interval(per_seed)
        if len(group.runs) == 1:
            low, high = bootstrap_ci(group.per_user[m][0])
        out[m] = {"mean": mean, "ci": [low, high], "ci_over": "seeds" if len(group.runs) > 1 else "users"}
    for key in ("coverage@10", "gini@10", "avg_pop@10", "ild@10"):
        out[key] = _seed_mean(group, key)
    return out


def significance(groups: list[Any], metrics: list[str]) -> list[dict[str, Any]]:
    """Every group against the first, every metric; Holm over all of them (t-test and Wilcoxon separately)."""
    ref = groups[0]
    tests = []
    for group in groups[1:]:
        for m in metrics:
            test = paired_test(ref.per_user[m].mean(axis=0), group.per_user[m].mean(axis=0))
            tests.append({"a": ref.name, "b": group.name, "metric": m, **test.__dict__})
    for key in ("t_p", "wilcoxon_p"):
        for t, adj in zip(tests, holm([t[key] for t in tests])):
            t[f"{key}_holm"] = adj
    return tests


def _plots(groups: list[Any], summary: dict[str, Any], metrics: list[str], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [g.name for g in groups]
    files = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        s = [summary["groups"][n][m] for n in names]
        means = np.array([v["mean"] for v in s])
        err = np.abs(np.array([v["ci"] for v in s]).T - means)
        ax.bar(names, means, yerr=err, capsize=4, color="tab:blue")
        ax.set_title(f"{m} (95% CI)")
        ax.tick_params(axis="x", rotation=30)
    save(fig, "metrics.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    buckets = length_bucket_names()
    for g in groups:
        by = g.results[0].get("buckets", {}).get("history_length", {})
        key = next((k for b in by.values() for k in b if k.startswith("ndcg@")), None)
        if key:
            ys = [np.mean([r["buckets"]["history_length"][b].get(key, np.nan) for r in g.results]) for b in buckets]
            ax.plot(buckets, ys, marker="o", label=g.name)
            ax.set_ylabel(key)
    ax.set_xlabel("history length")
    ax.legend()
    save(fig, "ndcg_by_history.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    curve0 = groups[0].results[0].get("popularity_curve")
    if curve0:
        deciles = np.arange(1, len(curve0["catalogue"]) + 1)
        ax.plot(deciles, curve0["catalogue"], "k--", label="catalogue")
        ax.plot(deciles, curve0["targets"], "k:", label="test targets")
        for g in groups:
            ax.plot(deciles, np.mean([r["popularity_curve"]["recommended"] for r in g.results], 0), marker="o",
                    label=f"{g.name} (recommended)")
    ax.set_xlabel("item popularity decile (1 = most popular)")
    ax.set_ylabel("share")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.legend(fontsize=7)
    save(fig, "popularity_curve.png")

    cover = [summary["groups"][n]["coverage@10"] for n in names]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(names, cover, color="tab:green")
    ax.set_title("coverage@10")
    ax.tick_params(axis="x", rotation=30)
    save(fig, "coverage.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ndcg = [_seed_mean(g, "ndcg@10") for g in groups]
    ax.scatter(cover, ndcg)
    for x, y, n in zip(cover, ndcg, names):
        ax.annotate(n, (x, y), fontsize=8)
    ax.set_xlabel("coverage@10")
    ax.set_ylabel("NDCG@10")
    save(fig, "tradeoff.png")
    return files


def _markdown(groups: list[Any], summary: dict[str, Any], metrics: list[str], plots: list[str]) -> str:
    ident = groups[0].results[0]
    lines = ["# Comparison", "", " · ".join(f"{k}: `{ident[k]}`" for k in IDENTITY_KEYS), ""]
    lines += ["| run | seeds | " + " | ".join(f"{m} (95% CI)" for m in metrics) + " | coverage@10 | gini@10 |"]
    lines += ["| --- " * (len(metrics) + 4) + "|"]
    for g in groups:
        s = summary["groups"][g.name]
        cells = [f"{s[m]['mean']:.4f} [{s[m]['ci'][0]:.4f}, {s[m]['ci'][1]:.4f}]" for m in metrics]
        lines.append(f"| {g.name} | {s['seeds']} | " + " | ".join(cells) + f" | {s['coverage@10']:.4f} | "
                     f"{s['gini@10']:.4f} |")
    lines += ["", f"Paired tests against `{groups[0].name}` over {groups[0].users.size} users (Holm-adjusted over "
              f"{len(summary['tests'])} tests):", ""]
    lines += ["| run | metric | mean diff (95% bootstrap CI) | t-test p (Holm) | Wilcoxon p (Holm) |",
              "| --- | --- | --- | --- | --- |"]
    for t in summary["tests"]:
        lines.append(f"| {t['b']} | {t['metric']} | {t['mean_diff']:+.4f} [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]"
                     f" | {t['t_p']:.2e} ({t['t_p_holm']:.2e}) | {t['wilcoxon_p']:.2e} ({t['wilcoxon_p_holm']:.2e}) |")
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_report(groups: list[Any], metrics: list[str], out: Path) -> dict[str, Any]:
    """Write report.md, summary.json and the plots into ``out``; returns the summary."""
    summary = {
        "identity": {k: groups[0].results[0][k] for k in IDENTITY_KEYS},
        "groups": {g.name: group_summary(g, metrics) for g in groups},
        "tests": significance(groups, metrics),
    }
    plots = _plots(groups, summary, metrics, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(groups, summary, metrics, plots))
    return summary
